from lifelong.cli import entry

entry()
