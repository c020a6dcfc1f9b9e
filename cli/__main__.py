from mdl.cli.app import main

main()
