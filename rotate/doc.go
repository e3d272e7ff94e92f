// Package rotate runs credential rotations: the procedure operators
// script by hand today, as one resumable operation per backend.
//
// A rotation goes through the phases prepare → apply → verify → publish →
// drain → retire → verify-retired:
//
//   - prepare picks the login to change and generates its password;
//   - apply changes it in the database (alternating-users: the user not in
//     use; single-user: the only user; vault-static: Vault's rotate-role);
//   - verify logs in with the new credential;
//   - publish writes it where every proxy reads it (the credential file,
//     replaced atomically, or a Vault KV v2 secret with check-and-set);
//   - drain waits until this proxy adopted it and moved its sessions (or the
//     drain deadline passed), plus a grace for other proxies;
//   - retire locks the previous user (alternating-users);
//   - verify-retired checks that the old credential is refused.
//
// Each phase is recorded in a journal file (mode 0600; while a rotation
// runs it also holds the new password, which is as secret as the
// credential file beside it) before the next begins, so that a proxy
// restarted after a crash resumes the rotation or rolls it back: before
// apply nothing changed; after apply and before publish the new password
// is verified again and published, or the change is undone; after publish
// the rotation continues. A failed verify rolls back and clients never
// notice. Only one rotation per backend runs at a time.
//
// Passwords come from crypto/rand and reach PostgreSQL as SCRAM-SHA-256
// verifiers computed here, so no server log line (log_statement) ever
// holds one; they are never logged by credswap either.
package rotate
