from taskd.cli import main

main()
