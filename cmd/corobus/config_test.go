package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// docs/configuration.md embeds the schema table; the two must agree.
func TestConfigurationDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- keys:begin -->\n")
	table, _, ok2 := strings.Cut(rest, "<!-- keys:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/configuration.md lost its keys:begin/keys:end markers")
	}
	var want bytes.Buffer
	writeKeys(&want, true)
	if table != want.String() {
		t.Errorf("docs/configuration.md is out of date: regenerate the table with `corobus config --keys --markdown`")
	}
}
