package config

import "strings"

// maxSuggestDistance is the largest edit distance at which an unknown key
// is taken for a misspelling of a known one.
const maxSuggestDistance = 2

// suggest returns the name of the field closest to key when it is within
// maxSuggestDistance edits, preferring the earlier field on a tie, or "".
// Case is ignored, since every field name is lowercase.
func suggest(key string, fields []field) string {
	key = strings.ToLower(key)
	best, bestDist := "", maxSuggestDistance+1
	for _, f := range fields {
		if d := editDistance(key, f.name); d < bestDist {
			best, bestDist = f.name, d
		}
	}
	return best
}

// editDistance returns the optimal string alignment distance between a and
// b: the fewest insertions, deletions, substitutions and transpositions of
// adjacent bytes that turn a into b. Transpositions count as one edit
// because swapped letters ("listne") are a common typo in keys. When the
// lengths alone differ by more than maxSuggestDistance it returns
// maxSuggestDistance+1 without computing the exact distance.
func editDistance(a, b string) int {
	// Bounding the work keeps a long key from costing time quadratic in
	// its length.
	if diff := len(a) - len(b); diff > maxSuggestDistance || -diff > maxSuggestDistance {
		return maxSuggestDistance + 1
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
