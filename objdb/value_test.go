package objdb

import (
	"errors"
	"testing"
)

// A value that does not parse says what is wrong in words, with the
// type's bounds when it is out of range, and is CS_ERR_INVALID_PARAM.
func TestParseValueSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		t    Type
		s    string
		want string
	}{
		{Uint8, "300", `"300" is not a valid u8 value: out of range (0 to 255): CS_ERR_INVALID_PARAM`},
		{Int8, "-129", `"-129" is not a valid i8 value: out of range (-128 to 127): CS_ERR_INVALID_PARAM`},
		{Uint64, "18446744073709551616", `"18446744073709551616" is not a valid u64 value: out of range (0 to 18446744073709551615): CS_ERR_INVALID_PARAM`},
		{Int32, "2147483648", `"2147483648" is not a valid i32 value: out of range (-2147483648 to 2147483647): CS_ERR_INVALID_PARAM`},
		{Uint32, "abc", `"abc" is not a valid u32 value: invalid syntax: CS_ERR_INVALID_PARAM`},
		{Double, "1e999", `"1e999" is not a valid dbl value: value out of range: CS_ERR_INVALID_PARAM`},
	} {
		_, err := ParseValue(tc.t, tc.s)
		if err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalidParam) {
			t.Errorf("ParseValue(%s, %q) = %v, want %s", tc.t, tc.s, err, tc.want)
		}
	}
}
