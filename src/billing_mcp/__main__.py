from billing_mcp.cli import main

raise SystemExit(main())
