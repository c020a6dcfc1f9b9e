"""`python -m mdl`: the command line."""
from mdl.cli.app import main

main()
