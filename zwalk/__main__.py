from zwalk.cli import main

main()
