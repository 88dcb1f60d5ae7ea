from zwalk.cli.main import main

main()
