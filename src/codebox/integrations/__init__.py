"""codebox for LLM agents: tool definitions for function calling (`tools`), a LangChain
toolkit (`langchain`), an MCP server (`mcp`), and the executors of agent frameworks:
smolagents (`smolagents`), AutoGen (`autogen`) and the OpenAI Agents SDK's sandbox agents
(`openai_agents`), each an optional extra."""
