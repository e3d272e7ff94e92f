package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/credswap/credswap/config"
)

// ClientTLSConfig loads the certificate offered to clients; it returns nil
// when none is configured.
func ClientTLSConfig(c config.ClientTLS) (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client_tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// UpstreamTLSConfig builds the TLS configuration towards the database for
// the libpq-style modes: disable (nil), require (encrypt, trust any
// certificate), verify-ca (certificate chains to ca_file or the system
// roots) and verify-full (verify-ca plus the host name).
func UpstreamTLSConfig(c config.UpstreamTLS, upstream string) (*tls.Config, error) {
	if c.Mode == "" || c.Mode == "disable" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(upstream)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if c.ServerName != "" {
		cfg.ServerName = c.ServerName
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream_tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream_tls.ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, errors.New("upstream_tls.ca_file: no PEM certificate found")
		}
	}
	switch c.Mode {
	case "require":
		cfg.InsecureSkipVerify = true
	case "verify-full":
		cfg.RootCAs = roots
	case "verify-ca":
		// Chain verification without the host name check, done by hand
		// because crypto/tls ties the two together.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("database presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	default:
		return nil, fmt.Errorf("unknown upstream_tls mode %q", c.Mode)
	}
	return cfg, nil
}
