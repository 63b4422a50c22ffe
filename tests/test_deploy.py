"""The deployment files under deploy/: no cluster and no container runtime run here, so they
are checked for what can be checked without one — YAML lint, the Kubernetes manifests
against the Kubernetes schemas (strict), and every codebox setting they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from codebox import CodeBoxSettings
from codebox.server import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))
LINT = YamlLintConfig("{extends: default, rules: {line-length: {max: 100}, "
                      "document-start: disable}}")
KUBERNETES_VERSION = "1.30"


def _known_variables() -> set[str]:
    box = {f"CODEBOX_{name.upper()}" for name in CodeBoxSettings.model_fields}
    server = {f"CODEBOX_SERVER_{name.upper()}" for name in ServerSettings.model_fields}
    return box | server


def test_there_is_something_to_check():
    names = {p.name for p in MANIFESTS}
    assert {"codebox-serve.yaml", "enterprise-gateway-values.yaml"} <= names
    assert (DEPLOY / "Dockerfile").is_file()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_yaml_lints_clean(path):
    problems = list(linter.run(path.read_text(), LINT, str(path)))
    assert not problems, "\n".join(f"{path.name}:{p.line}: {p.desc}" for p in problems)


def test_kubernetes_manifests_match_the_schemas():
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "codebox-serve.yaml")
                                               .read_text()) if d]
    assert {d["kind"] for d in documents} >= {"Deployment", "Service", "PersistentVolumeClaim"}
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_caught():
    # The check above can fail: a misspelt field is refused.
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replica": 2, "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_settings_the_deployment_names_exist():
    named = set()
    for path in [DEPLOY / "Dockerfile", *MANIFESTS]:
        named |= set(re.findall(r"\bCODEBOX_[A-Z_]*[A-Z]\b", path.read_text()))
    assert named, "the deployment files set no codebox settings"
    assert named <= _known_variables(), sorted(named - _known_variables())


def test_the_image_runs_codebox_serve_as_a_user_on_all_interfaces():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^CMD \["codebox", "serve"\]$', dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.MULTILINE)
    assert "CODEBOX_SERVER_HOST=0.0.0.0" in dockerfile
