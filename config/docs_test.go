package config

import (
	"flag"
	"fmt"
	"html"
	"os"
	"strings"
	"testing"
)

// updateDocs rewrites the table in docs/operations.md from Vars:
//
//	go test ./config -run TestOperationsDocTable -update-docs
var updateDocs = flag.Bool("update-docs", false, "rewrite the configuration table in ../docs/operations.md from Vars()")

const (
	operationsDoc = "../docs/operations.md"
	tableBegin    = "<!-- BEGIN CONFIG TABLE: generated from config.Vars(); go test ./config -run TestOperationsDocTable -update-docs -->"
	tableEnd      = "<!-- END CONFIG TABLE -->"
	tableHeader   = "| VARIABLE | DEFAULT | DESCRIPTION |"
	tableRule     = "|---|---|---|"
)

// TestOperationsDocTable keeps the configuration table of
// docs/operations.md equal to `queuewatch --help`: one row per variable, in
// the same order, with the same default ("-" for none) and description.
func TestOperationsDocTable(t *testing.T) {
	b, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	before, rest, ok1 := strings.Cut(doc, tableBegin)
	table, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s: the table markers %q and %q are missing", operationsDoc, tableBegin, tableEnd)
	}
	if *updateDocs {
		doc = before + tableBegin + "\n" + docTable() + tableEnd + after
		if err := os.WriteFile(operationsDoc, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the table in %s", operationsDoc)
		return
	}

	const fix = "; run: go test ./config -run TestOperationsDocTable -update-docs"
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != tableHeader || strings.TrimSpace(lines[1]) != tableRule {
		t.Fatalf("%s: the table must start with %q and %q"+fix, operationsDoc, tableHeader, tableRule)
	}
	type row struct{ def, desc string }
	rows := make(map[string][]row)
	var order []string
	for i, l := range lines[2:] {
		cells, err := splitRow(l)
		if err != nil || len(cells) != 3 {
			t.Errorf("%s: table row %d %q: want 3 cells (%v)"+fix, operationsDoc, i+1, l, err)
			continue
		}
		name := strings.Trim(cells[0], "`")
		rows[name] = append(rows[name], row{def: cells[1], desc: cells[2]})
		order = append(order, name)
	}
	var want []string
	for _, v := range Vars() {
		want = append(want, v.Name)
		rs := rows[v.Name]
		if len(rs) != 1 {
			t.Errorf("%s: %d rows for %s, want exactly 1"+fix, operationsDoc, len(rs), v.Name)
			continue
		}
		r := rs[0]
		if got := cellDefault(r.def); got != v.Default {
			t.Errorf("%s: %s: default %q, --help says %q"+fix, operationsDoc, v.Name, got, v.Default)
		}
		if got := cellText(r.desc); got != v.Description {
			t.Errorf("%s: %s: description %q, --help says %q"+fix, operationsDoc, v.Name, got, v.Description)
		}
	}
	known := make(map[string]bool)
	for _, n := range want {
		known[n] = true
	}
	for _, n := range order {
		if !known[n] {
			t.Errorf("%s: row for %s, which is not a variable"+fix, operationsDoc, n)
		}
	}
	if !t.Failed() && strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("%s: rows are not in the order of --help"+fix, operationsDoc)
	}
}

// TestDocTableRoundTrip shows that what docTable writes parses back to Vars,
// including descriptions with characters Markdown would eat.
func TestDocTableRoundTrip(t *testing.T) {
	for _, s := range []string{"a | b", "<subject>.<phone>", "x & y", "`code`", "back\\slash"} {
		if got := cellText(cellEscape(s)); got != s {
			t.Errorf("round trip of %q: %q (escaped %q)", s, got, cellEscape(s))
		}
	}
	lines := strings.Split(strings.TrimSpace(docTable()), "\n")
	if len(lines) != len(Vars())+2 {
		t.Fatalf("docTable has %d lines, want %d", len(lines), len(Vars())+2)
	}
	for i, v := range Vars() {
		cells, err := splitRow(lines[i+2])
		if err != nil || len(cells) != 3 {
			t.Fatalf("row %q: %v", lines[i+2], err)
		}
		if strings.Trim(cells[0], "`") != v.Name || cellDefault(cells[1]) != v.Default || cellText(cells[2]) != v.Description {
			t.Errorf("row %q does not parse back to %+v", lines[i+2], v)
		}
	}
}

// docTable renders Vars as the Markdown table of docs/operations.md.
func docTable() string {
	var b strings.Builder
	fmt.Fprintln(&b, tableHeader)
	fmt.Fprintln(&b, tableRule)
	for _, v := range Vars() {
		def := "-"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", v.Name, def, cellEscape(v.Description))
	}
	return b.String()
}

// cellEscape makes s safe in a Markdown table cell: HTML entities for & < >
// (so <subject> is shown, not taken for a tag), \ before | and \.
func cellEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `\`, `\\`, "|", `\|`).Replace(s)
}

// cellText undoes cellEscape.
func cellText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '|' || s[i+1] == '\\') {
			i++
		}
		b.WriteByte(s[i])
	}
	return html.UnescapeString(b.String())
}

// cellDefault reads a default cell: "-" (or "–") for none, else the value
// in backticks.
func cellDefault(s string) string {
	if s == "-" || s == "–" {
		return ""
	}
	return cellText(strings.TrimSuffix(strings.TrimPrefix(s, "`"), "`"))
}

// splitRow splits "| a | b | c |" into trimmed cells; \| is not a
// separator.
func splitRow(l string) ([]string, error) {
	l = strings.TrimSpace(l)
	if !strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|") || len(l) < 2 {
		return nil, fmt.Errorf("not a table row")
	}
	l = l[1 : len(l)-1]
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(l); i++ {
		switch {
		case l[i] == '\\' && i+1 < len(l):
			cur.WriteByte(l[i])
			cur.WriteByte(l[i+1])
			i++
		case l[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(l[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String())), nil
}
