from orchestrator.entrypoints.cli import console_main

console_main()
