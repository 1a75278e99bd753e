// Command hearth is the Hearth Matrix homeserver: one binary that serves, writes its
// configuration, and administers accounts.
package main

import (
	"fmt"
	"os"
)

const usage = `Hearth — a Matrix homeserver.

Usage:
  hearth                          run a local server with default settings (data in ./data)
  hearth serve --config FILE      run the server described by FILE
  hearth generate-config ...      write a new config and signing key (see --help)
  hearth register-user ...        create a user account (see --help)
  hearth version                  print the version

Run "hearth COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		return cmdDefault()
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest)
	case "generate-config":
		return cmdGenerateConfig(rest)
	case "register-user":
		return cmdRegisterUser(rest)
	case "version", "--version":
		return cmdVersion(rest)
	case "help", "-h", "--help", "-help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "hearth: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
