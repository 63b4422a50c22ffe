"""codebox for LLM agents: tool definitions for function calling (`tools`), a LangChain
toolkit (`langchain`) and an MCP server (`mcp`)."""
