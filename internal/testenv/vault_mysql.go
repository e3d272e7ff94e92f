package testenv

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// ConfigureMariaDB adds the connection name to the database engine at
// mount: the mysql-database-plugin logging in as m's root over TCP without
// TLS. allowedRoles are the roles that may use it; none means all ("*").
func (v *Vault) ConfigureMariaDB(t testing.TB, mount, name string, m *MariaDB, allowedRoles ...string) {
	t.Helper()
	if len(allowedRoles) == 0 {
		allowedRoles = []string{"*"}
	}
	v.Do(t, http.MethodPost, mount+"/config/"+name, map[string]any{
		"plugin_name":       "mysql-database-plugin",
		"connection_url":    fmt.Sprintf("{{username}}:{{password}}@tcp(%s)/", m.Addr()),
		"username":          "root",
		"password":          m.RootPassword,
		"allowed_roles":     allowedRoles,
		"verify_connection": true,
	}, nil)
}

// CreateMariaDBDynamicRole creates a dynamic role whose users get every
// privilege on database db:
//
//	CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';
//	GRANT ALL PRIVILEGES ON `db`.* TO '{{name}}'@'%';
//
// Revoking a lease drops the user (Vault's default for the plugin).
func (v *Vault) CreateMariaDBDynamicRole(t testing.TB, mount, role, conn, db string, defaultTTL, maxTTL time.Duration) {
	t.Helper()
	v.Do(t, http.MethodPost, mount+"/roles/"+role, map[string]any{
		"db_name": conn,
		"creation_statements": []string{
			`CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';`,
			"GRANT ALL PRIVILEGES ON " + quoteMyIdent(db) + `.* TO '{{name}}'@'%';`,
		},
		"default_ttl": seconds(defaultTTL),
		"max_ttl":     seconds(maxTTL),
	}, nil)
}
