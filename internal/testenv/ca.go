package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a throwaway certificate authority whose certificates are valid for one year. Its methods
// are safe for concurrent use.
type CA struct {
	CertFile string            // PEM file of the CA certificate, for clients' sslrootcert
	CertPEM  []byte            // the same certificate in PEM
	Cert     *x509.Certificate // the same certificate, parsed
	Pool     *x509.CertPool    // a pool holding only this CA, for tls.Config.RootCAs

	key *ecdsa.PrivateKey

	mu     sync.Mutex
	serial int64 // last serial number issued; guarded by mu
}

// NewCA creates a CA with an ECDSA P-256 key and writes its certificate to dir/ca.crt. The key
// stays in memory.
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testenv: generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "credswap testenv CA", Organization: []string{"credswap"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testenv: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testenv: parse CA certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("testenv: write CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{CertFile: certFile, CertPEM: certPEM, Cert: cert, Pool: pool, key: key, serial: 1}, nil
}

// TestCA is [NewCA] in a fresh t.TempDir, failing the test on error.
func TestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Issue writes a leaf certificate for hosts (DNS names or IP addresses; the first is also the
// common name) and its ECDSA P-256 key to dir as leaf-N.crt and leaf-N.key, N being the serial
// number, and returns their paths. The key file has mode 0600. The certificate is good for both
// server and client authentication.
func (ca *CA) Issue(dir string, hosts ...string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, serial, err := ca.issue(hosts)
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, fmt.Sprintf("leaf-%d.crt", serial))
	keyFile = filepath.Join(dir, fmt.Sprintf("leaf-%d.key", serial))
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("testenv: write certificate: %w", err)
	}
	f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("testenv: write key: %w", err)
	}
	_, err = f.Write(keyPEM)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("testenv: write key: %w", err)
	}
	return certFile, keyFile, nil
}

// IssueTLS returns a leaf certificate for hosts as a tls.Certificate, without touching the disk.
func (ca *CA) IssueTLS(hosts ...string) (tls.Certificate, error) {
	certPEM, keyPEM, _, err := ca.issue(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// ClientTLSConfig returns a TLS client configuration that trusts only this CA and verifies the
// server's certificate against serverName (as sslmode=verify-full does).
func (ca *CA) ClientTLSConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

func (ca *CA) issue(hosts []string) (certPEM, keyPEM []byte, serial int64, err error) {
	if len(hosts) == 0 {
		return nil, nil, 0, errors.New("testenv: issue certificate: no hosts")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("testenv: generate key: %w", err)
	}
	ca.mu.Lock()
	ca.serial++
	serial = ca.serial
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"credswap"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("testenv: create certificate for %v: %w", hosts, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("testenv: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, serial, nil
}
