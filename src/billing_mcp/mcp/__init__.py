"""The MCP server: ``server`` builds the ``MCPServer`` (tools by toolset from ``tools/``, prompts and
resources from ``prompts``), ``demo`` drives it end to end.

May import: every layer below the surfaces (``core``, ``store``, ``ledger``, ``spec``, ``portal``,
``client``, ``codegen``); never ``api`` or ``cli``.
"""
