"""One module per `docsam` subcommand: parse options, call the library, report."""
