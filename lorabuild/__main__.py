from lorabuild.cli import main

main()
