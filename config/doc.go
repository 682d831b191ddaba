// Package config loads queuewatch's settings from QUEUEWATCH_* environment
// variables, validates them and reports problems as *Error values that name
// the variable, the problem and the expected form, without ever printing a
// secret.
//
// The variable names are a public contract. Each field of Config carries its
// full variable name in an `envconfig` tag together with its `default` and
// `desc`; Vars and Usage are derived from those tags so the documentation
// cannot drift from the code.
package config
