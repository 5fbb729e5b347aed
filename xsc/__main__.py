from xsc.cli import main

main()
