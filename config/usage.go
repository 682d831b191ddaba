package config

import (
	"fmt"
	"io"
	"reflect"
	"text/tabwriter"
)

// Var documents one environment variable.
type Var struct {
	Name        string // full name, e.g. QUEUEWATCH_POLL_INTERVAL
	Default     string // "" when there is none
	Description string
}

// Vars lists every variable in declaration order, read from Config's struct
// tags.
func Vars() []Var {
	t := reflect.TypeFor[Config]()
	vars := make([]Var, 0, t.NumField())
	for f := range t.Fields() {
		vars = append(vars, Var{
			Name:        f.Tag.Get("envconfig"),
			Default:     f.Tag.Get("default"),
			Description: f.Tag.Get("desc"),
		})
	}
	return vars
}

// Usage writes a table of every variable, its default ("-" when none) and
// its description, as shown by `queuewatch --help`.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tDESCRIPTION")
	for _, v := range Vars() {
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, def, v.Description)
	}
	return tw.Flush()
}

// isSecret reports whether the variable named v holds a Secret.
func isSecret(v string) bool {
	for f := range reflect.TypeFor[Config]().Fields() {
		if f.Tag.Get("envconfig") == v {
			return f.Type == reflect.TypeFor[Secret]()
		}
	}
	return false
}
