// compose-check loads a compose file with compose-go, the library Docker Compose itself uses:
// validation against the Compose Specification's JSON schema, interpolation (${VAR:?message}),
// YAML merge keys, profiles (COMPOSE_PROFILES, as docker compose reads it), and the semantic checks
// (depends_on targets, volumes...). It prints the resolved
// project as JSON for test/deploy/compose.test.ts to assert on, or the loader's error and exit 1.
//
//	go run . ../../../compose.yaml
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check COMPOSE_FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions([]string{os.Args[1]}, cli.WithOsEnv, cli.WithDefaultProfiles())
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
