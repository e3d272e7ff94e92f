package admin_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestReadyzCarriesNoErrorText: /readyz, which needs no token, says that a
// backend is degraded, not why; the reason, which names the user, the
// upstream and the database's message, is in /v1/status.
func TestReadyzCarriesNoErrorText(t *testing.T) {
	pg := testenv.PG(t)
	userA, passA := pg.CreateUser(t, "rdy")
	userB, _ := pg.CreateUser(t, "rdy")
	p := proxytest.Start(t, pg, userA, passA)
	// A credential the database refuses: the test login fails and the
	// backend stays on userA, degraded.
	p.WriteCredential(t, userB, "wrong-"+proxytest.Random(4))
	var lastError string
	proxytest.Eventually(t, 10*time.Second, "/v1/status to report the failing source", func() bool {
		st := p.Status(t)
		lastError = st.Backends[0].Credential.LastError
		return st.Backends[0].Credential.Failing && lastError != ""
	})
	if !strings.Contains(lastError, userB) {
		t.Fatalf("/v1/status last_error lacks the user: %q", lastError)
	}

	resp, err := http.Get(p.AdminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"degraded"`) ||
		!strings.Contains(string(body), "credential source failing") {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	for _, leak := range []string{userB, userA, pg.Addr(), "password authentication", "SQLSTATE", lastError} {
		if strings.Contains(string(body), leak) {
			t.Fatalf("/readyz reveals %q:\n%s", leak, body)
		}
	}
}
