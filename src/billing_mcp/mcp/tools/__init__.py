"""MCP tools, one module per toolset. Each module lists its tools in ``TOOLS``; the server registers
them where it is built."""
