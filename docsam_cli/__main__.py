from docsam_cli.app import main

main()
