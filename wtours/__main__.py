from wtours.cli.main import main

main()
