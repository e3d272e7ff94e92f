//go:build tools

// Package tools pins the HashiCorp Vault server that internal/testenv builds for tests. It is a
// module of its own so that Vault's large dependency graph never enters the main module's go.mod.
//
// Build with:
//
//	cd tools/vault && go build -o <cache>/vault github.com/hashicorp/vault
package tools

import _ "github.com/hashicorp/vault"
