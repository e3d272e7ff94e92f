package rotate

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math/big"

	"github.com/xdg-go/scram"
)

// generatePassword draws length characters uniformly from alphabet.
func generatePassword(length int, alphabet string) (string, error) {
	chars := []rune(alphabet)
	if length <= 0 || len(chars) < 2 {
		return "", fmt.Errorf("password policy: length %d, %d characters", length, len(chars))
	}
	out := make([]rune, length)
	n := big.NewInt(int64(len(chars)))
	for i := range out {
		k, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", err
		}
		out[i] = chars[k.Int64()]
	}
	return string(out), nil
}

// scramVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password, in the form ALTER ROLE … PASSWORD accepts as already hashed.
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	const iters = 4096
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return "", err
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iters})
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iters, b64(salt), b64(sc.StoredKey), b64(sc.ServerKey)), nil
}
