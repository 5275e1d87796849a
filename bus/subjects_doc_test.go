package bus

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// Every subject Subjects builds is documented in docs/subjects.md: the bar
// is "every public subject is documented", and Subjects is the one place
// subjects are spelled, so a method without a row is a subject without
// documentation. Each method is called with sample arguments, and the
// result, its prefix and node written as the doc writes them, must match
// a subject of the doc's tables token for token: a name in angle brackets
// in the doc stands for any argument, and where a method takes the last
// tokens as an argument (an operation, a kind), the doc names each value.
// A built subject may also be the start of a documented one (a
// component's subject, to which its functions' names are appended).
func TestEverySubjectIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/subjects.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := docSubjects(string(doc))
	if len(documented) == 0 {
		t.Fatal("no subjects found in docs/subjects.md's tables")
	}
	const prefix, node, arg = "corobus.docprefix", uint32(4242), "docarg"
	s, err := NewSubjects(prefix)
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(s)
	typ := v.Type()
	for i := range typ.NumMethod() {
		m := typ.Method(i)
		switch m.Name {
		case "Prefix", "Join", "All":
			continue // the prefix itself, and the builder for later layers
		}
		var args []reflect.Value
		ok := true
		for j := 1; j < m.Type.NumIn(); j++ {
			switch in := m.Type.In(j); in.Kind() {
			case reflect.Uint32:
				args = append(args, reflect.ValueOf(node))
			case reflect.String:
				args = append(args, reflect.ValueOf(arg))
			default:
				ok = false
			}
		}
		if !ok || m.Type.NumOut() != 1 || m.Type.Out(0).Kind() != reflect.String {
			continue
		}
		got := v.Method(i).Call(args)[0].String()
		if strings.ContainsAny(got, "*>") {
			continue // a subscription wildcard over documented subjects
		}
		tokens := strings.Split(strings.TrimPrefix(got, prefix+"."), ".")
		found := false
		for _, d := range documented {
			if len(d) >= len(tokens) && subjectMatches(tokens, d[:len(tokens)], arg) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("Subjects.%s builds %s, which docs/subjects.md does not document", m.Name, got)
		}
	}
}

// subjectMatches says whether the tokens after the prefix of a built
// subject are the documented subject d (also without its prefix): node
// 4242 is written <node> (or any <name>: a version), an argument any
// <name> or a value the doc names.
func subjectMatches(tokens, d []string, arg string) bool {
	if len(tokens) != len(d) {
		return false
	}
	for i, tok := range tokens {
		switch {
		case tok == d[i]:
		case tok == "4242" && strings.HasPrefix(d[i], "<"):
		case strings.Contains(tok, arg) && d[i] != "<node>":
		default:
			return false
		}
	}
	return true
}

// docSubjects reads the subjects of the doc's tables (the code spans of
// each row's first cell) as token lists without their prefix. The doc's
// shorthands are expanded: P for <prefix>, <N> for <node>, {a,b} for
// alternatives, "….x.y" for the span before it with its last two tokens
// replaced by x.y.
func docSubjects(doc string) [][]string {
	span := regexp.MustCompile("`([^`]+)`")
	var out [][]string
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(line[1:], " | ", 2)[0]
		var prev []string
		for _, m := range span.FindAllStringSubmatch(cell, -1) {
			subj := strings.ReplaceAll(m[1], "<N>", "<node>")
			var tokens []string
			switch {
			case strings.HasPrefix(subj, "<prefix>."):
				tokens = strings.Split(strings.TrimPrefix(subj, "<prefix>."), ".")
			case strings.HasPrefix(subj, "P."):
				tokens = strings.Split(strings.TrimPrefix(subj, "P."), ".")
			case strings.HasPrefix(subj, "…") && prev != nil:
				rest := strings.Split(strings.TrimLeft(strings.TrimPrefix(subj, "…"), "."), ".")
				if len(rest) > len(prev) {
					continue
				}
				tokens = append(append([]string(nil), prev[:len(prev)-len(rest)]...), rest...)
			default:
				continue
			}
			prev = tokens
			out = append(out, expandAlternatives(tokens)...)
		}
	}
	return out
}

// expandAlternatives turns a token {a,b} into one subject per choice.
func expandAlternatives(tokens []string) [][]string {
	for i, tok := range tokens {
		if strings.HasPrefix(tok, "{") && strings.HasSuffix(tok, "}") {
			var out [][]string
			for _, alt := range strings.Split(tok[1:len(tok)-1], ",") {
				t := append(append(append([]string(nil), tokens[:i]...), alt), tokens[i+1:]...)
				out = append(out, expandAlternatives(t)...)
			}
			return out
		}
	}
	return [][]string{tokens}
}
