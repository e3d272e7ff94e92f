package config

import "net"

// UpstreamOnLoopback reports whether the host of b.Upstream is "localhost"
// or a loopback address, where no network lies between the proxy and the
// database. A host name other than localhost counts as remote, whatever
// it resolves to.
func (b Backend) UpstreamOnLoopback() bool {
	host, _, err := net.SplitHostPort(b.Upstream)
	return err == nil && isLoopback(host)
}

// UpstreamVerified reports whether upstream TLS proves that the server is
// the database named by the upstream address (mode verify-full). verify-ca
// does not: any holder of a certificate from the CA passes.
func (b Backend) UpstreamVerified() bool { return b.UpstreamTLS.Mode == tlsVerifyFull }
