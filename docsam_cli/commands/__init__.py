"""One module per `docsam` subcommand: parse options into a request, call the library, report.

A command is a plain function whose parameters are Typer options, registered by module path in
`docsam_cli.app.COMMANDS` (the app imports the module only when the command runs or shows its help, and
adds the message options `-v`, `-q`, `--debug`). At module level a command imports nothing heavy (torch,
torchvision, transformers, scipy, cv2, pycocotools): those go inside the function. Options that several
commands share are declared once in `docsam_cli.commands.options`.
"""
