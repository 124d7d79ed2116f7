package freeport

import "testing"

func TestAddrNeverTwice(t *testing.T) {
	seen := map[string]bool{}
	for range 500 {
		a, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
}
