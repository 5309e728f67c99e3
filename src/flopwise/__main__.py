from flopwise.cli.main import run

run()
