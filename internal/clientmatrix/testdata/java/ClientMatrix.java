// The JDBC clients of the matrix (internal/clientmatrix): pgjdbc
// ("java ClientMatrix postgres") and MariaDB Connector/J ("java
// ClientMatrix mariadb"). The test compiles this file with javac against
// the driver's jar and runs it with the contract's environment (see
// harness_test.go): one long-lived connection with autocommit off and
// session state set once, server-side prepared statements reused in every
// iteration, commits, rollbacks, a savepoint, batches, errors followed by
// more work, 1.5 MiB of text and binary both ways, and (Connector/J) the
// driver's pool. Any mismatch throws and the program exits with status 1.

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import javax.sql.DataSource;

public final class ClientMatrix {
    /** An answer differed from what the program expected. */
    static final class Mismatch extends RuntimeException {
        Mismatch(String what) {
            super(what);
        }
    }

    static void expect(boolean ok, String what) {
        if (!ok) {
            throw new Mismatch(what);
        }
    }

    static void equal(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) {
            throw new Mismatch(what + ": got " + shorten(got) + ", want " + shorten(want));
        }
    }

    static String shorten(Object o) {
        String s = String.valueOf(o);
        return s.length() > 200 ? s.substring(0, 120) + "… (" + s.length() + " characters)" : s;
    }

    /** The contract's environment. */
    static final class Config {
        final Map<String, String> env = System.getenv();
        final String host = env.get("CM_HOST");
        final String port = env.get("CM_PORT");
        final String user = env.get("CM_USER");
        final String password = env.get("CM_PASSWORD");
        final String database = env.get("CM_DATABASE");
        final List<String> backendUsers = Arrays.asList(env.get("CM_BACKEND_USERS").split(","));
        final double seconds = Double.parseDouble(env.getOrDefault("CM_SECONDS", "0"));
        final int minIterations = Integer.parseInt(env.getOrDefault("CM_MIN_ITERATIONS", "2"));
        final int minChanges = Integer.parseInt(env.getOrDefault("CM_MIN_USER_CHANGES", "0"));
        final double maxSeconds = Double.parseDouble(env.getOrDefault("CM_MAX_SECONDS", "60"));
        final long pauseMillis = Long.parseLong(env.getOrDefault("CM_PAUSE_MS", "0"));

        Properties login() {
            Properties p = new Properties();
            p.setProperty("user", user);
            p.setProperty("password", password);
            return p;
        }
    }

    /** The backend users the long-lived connection ran as, in order. */
    static final class Users {
        final Config cfg;
        final List<String> seen = new ArrayList<>();

        Users(Config cfg) {
            this.cfg = cfg;
        }

        void observe(String user) {
            expect(cfg.backendUsers.contains(user), "current_user " + user + " is not one of the backend users");
            if (seen.isEmpty() || !seen.get(seen.size() - 1).equals(user)) {
                seen.add(user);
            }
        }
    }

    interface Iteration {
        void run(int i, Users users) throws Exception;
    }

    /**
     * Calls it until the work is done (CM_SECONDS passed, CM_MIN_ITERATIONS ran and current_user changed
     * CM_MIN_USER_CHANGES times, or CM_MAX_SECONDS passed), then checks the changes and prints the RESULT line.
     */
    static void run(String name, Config cfg, Iteration it) throws Exception {
        Users users = new Users(cfg);
        long start = System.nanoTime();
        int i = 0;
        while (true) {
            i++;
            it.run(i, users);
            double elapsed = (System.nanoTime() - start) / 1e9;
            if ((i >= cfg.minIterations && elapsed >= cfg.seconds && users.seen.size() - 1 >= cfg.minChanges) || elapsed >= cfg.maxSeconds) {
                break;
            }
            Thread.sleep(cfg.pauseMillis);
        }
        int changes = users.seen.size() - 1;
        expect(changes >= cfg.minChanges, "current_user changed " + changes + " times (" + users.seen + "), want at least " + cfg.minChanges);
        System.out.println("RESULT client=" + name + " iterations=" + i + " users=" + String.join(",", users.seen));
    }

    /** A text of about 1.5 MiB (UTF-8) with multi-byte characters, different for each i. */
    static String bigText(int i) {
        String unit = String.format("%06d credswap client matrix: é ß € ✓ 😀 ", i);
        int n = 1572864 / unit.getBytes(StandardCharsets.UTF_8).length + 1;
        return unit.repeat(n);
    }

    /** 1.5 MiB of every byte value, rotated by i. */
    static byte[] bigBytes(int i) {
        byte[] b = new byte[1572864];
        for (int k = 0; k < b.length; k++) {
            b[k] = (byte) ((k + i) % 256);
        }
        return b;
    }

    /** Runs sql, which must fail with SQLSTATE state, then rolls back. */
    static void expectFailure(Connection conn, PreparedStatement ps, String state, String what) throws SQLException {
        try {
            ps.execute();
        } catch (SQLException e) {
            equal(e.getSQLState(), state, "SQLSTATE of " + what);
            return;
        }
        throw new Mismatch(what + " did not fail");
    }

    static String one(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            expect(rs.next(), "no row");
            return rs.getString(1);
        }
    }

    public static void main(String[] args) throws Exception {
        Config cfg = new Config();
        switch (args.length > 0 ? args[0] : "") {
            case "postgres":
                postgres(cfg);
                break;
            case "mariadb":
                mariadb(cfg);
                break;
            default:
                System.err.println("usage: ClientMatrix postgres|mariadb");
                System.exit(2);
        }
    }

    // ---- pgjdbc ----

    static void postgres(Config cfg) throws Exception {
        final String name = "pgjdbc";
        Properties props = cfg.login();
        props.setProperty("prepareThreshold", "1");
        props.setProperty("ApplicationName", "cm-" + name);
        props.setProperty("connectTimeout", "20");
        String url = "jdbc:postgresql://" + cfg.host + ":" + cfg.port + "/" + cfg.database;
        try (Connection conn = DriverManager.getConnection(url, props)) {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.execute("SET search_path TO app");
                st.execute("SET TIME ZONE 'Australia/Eucla'");
                st.execute("SET lock_timeout = '7s'");
                st.execute("SET app.client = '" + name + "'");
            }
            conn.commit();
            // prepareThreshold=1: each of these is a named statement on the
            // server from its first execution, and is reused after that.
            PreparedStatement state = conn.prepareStatement("SELECT current_user, current_setting('search_path'), current_setting('TimeZone'),"
                    + " current_setting('lock_timeout'), current_setting('app.client', true),"
                    + " to_char(timestamptz '2024-01-01 00:00:00+00', 'YYYY-MM-DD HH24:MI TZH:TZM')");
            PreparedStatement insert = conn.prepareStatement("INSERT INTO accounts (name, balance) VALUES (?, ?)");
            PreparedStatement move = conn.prepareStatement("UPDATE accounts SET balance = balance + ? WHERE name = ?");
            PreparedStatement balanceOf = conn.prepareStatement("SELECT balance FROM accounts WHERE name = ?");
            PreparedStatement named = conn.prepareStatement("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'S\\_%'");
            PreparedStatement divide = conn.prepareStatement("SELECT 1 / ?");
            PreparedStatement putDoc = conn.prepareStatement("INSERT INTO documents (name, body, data) VALUES (?, ?, ?) RETURNING id");
            PreparedStatement getDoc = conn.prepareStatement("SELECT body, data FROM documents WHERE id = ?");
            PreparedStatement delDoc = conn.prepareStatement("DELETE FROM documents WHERE id = ?");

            run(name, cfg, (i, users) -> {
                String a = name + "-" + i + "-a", b = name + "-" + i + "-b", c = name + "-" + i + "-c";
                try (ResultSet rs = state.executeQuery()) {
                    expect(rs.next(), "no session state row");
                    users.observe(rs.getString(1));
                    equal(rs.getString(2), "app", "search_path");
                    equal(rs.getString(3), "Australia/Eucla", "TimeZone");
                    equal(rs.getString(4), "7s", "lock_timeout");
                    equal(rs.getString(5), name, "app.client");
                    equal(rs.getString(6), "2024-01-01 08:45 +08:45", "local time of 2024-01-01 00:00 UTC");
                }
                conn.commit();

                // A transfer that commits (inserts as a batch), and one that rolls back.
                insert.setString(1, a);
                insert.setBigDecimal(2, new BigDecimal("100"));
                insert.addBatch();
                insert.setString(1, b);
                insert.setBigDecimal(2, BigDecimal.ZERO);
                insert.addBatch();
                equal(insert.executeBatch().length, 2, "batch size");
                move.setBigDecimal(1, new BigDecimal("-30.50"));
                move.setString(2, a);
                equal(move.executeUpdate(), 1, "debited rows");
                move.setBigDecimal(1, new BigDecimal("30.50"));
                move.setString(2, b);
                equal(move.executeUpdate(), 1, "credited rows");
                conn.commit();
                insert.setString(1, c);
                insert.setBigDecimal(2, new BigDecimal("5"));
                insert.executeUpdate();
                conn.rollback();
                balanceOf.setString(1, a);
                equal(one(balanceOf), "69.50", "balance of a after a commit and a rollback");
                balanceOf.setString(1, b);
                equal(one(balanceOf), "30.50", "balance of b");
                balanceOf.setString(1, c);
                try (ResultSet rs = balanceOf.executeQuery()) {
                    expect(!rs.next(), "the rolled-back account exists");
                }
                int n = Integer.parseInt(one(named));
                expect(n >= 5, "only " + n + " of pgjdbc's named statements exist on the server");
                conn.commit();

                // Errors, then the connection goes on; a savepoint keeps the
                // work before an error.
                divide.setInt(1, 0);
                expectFailure(conn, divide, "22012", "1 / 0");
                conn.rollback();
                move.setBigDecimal(1, new BigDecimal("-1"));
                move.setString(2, a);
                move.executeUpdate();
                Savepoint sp = conn.setSavepoint();
                move.setBigDecimal(1, new BigDecimal("-1000"));
                move.setString(2, b);
                expectFailure(conn, move, "23514", "a negative balance");
                conn.rollback(sp);
                conn.commit();
                balanceOf.setString(1, a);
                equal(one(balanceOf), "68.50", "balance after the savepoint");
                balanceOf.setString(1, b);
                equal(one(balanceOf), "30.50", "balance after the failed update");
                conn.commit();

                // 1.5 MiB of text and of bytea, both ways.
                String body = bigText(i);
                byte[] data = bigBytes(i);
                putDoc.setString(1, a);
                putDoc.setString(2, body);
                putDoc.setBytes(3, data);
                int doc;
                try (ResultSet rs = putDoc.executeQuery()) {
                    expect(rs.next(), "no id");
                    doc = rs.getInt(1);
                }
                conn.commit();
                getDoc.setInt(1, doc);
                try (ResultSet rs = getDoc.executeQuery()) {
                    expect(rs.next(), "no document");
                    equal(rs.getString(1), body, "the large text read back");
                    expect(Arrays.equals(rs.getBytes(2), data), "the large bytea read back differs");
                }
                delDoc.setInt(1, doc);
                equal(delDoc.executeUpdate(), 1, "deleted documents");
                conn.commit();
            });
        }
    }

    // ---- MariaDB Connector/J ----

    static void mariadb(Config cfg) throws Exception {
        final String name = "connector-j";
        String base = "jdbc:mariadb://" + cfg.host + ":" + cfg.port + "/" + cfg.database;
        // Server-side prepared statements; the RSA key exchange for the
        // proxy's caching_sha2_password over plaintext.
        String opts = "useServerPrepStmts=true&allowPublicKeyRetrieval=true&connectTimeout=20000";
        // The driver's pool, found by name so that this file compiles
        // against either driver's jar alone.
        Class<?> poolClass = Class.forName("org.mariadb.jdbc.MariaDbPoolDataSource");
        DataSource pool = (DataSource) poolClass.getConstructor(String.class)
                .newInstance(base + "?" + opts + "&maxPoolSize=3&minPoolSize=1&poolName=cm");
        poolClass.getMethod("setUser", String.class).invoke(pool, cfg.user);
        poolClass.getMethod("setPassword", String.class).invoke(pool, cfg.password);
        try (Connection conn = DriverManager.getConnection(base + "?" + opts, cfg.login()); AutoCloseable closePool = (AutoCloseable) pool) {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.execute("SET time_zone = '+08:45'");
                st.execute("SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'");
                st.execute("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci");
                st.execute("SET @client = '" + name + "'");
            }
            conn.commit();
            PreparedStatement state = conn.prepareStatement("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), @@session.time_zone,"
                    + " DATE_FORMAT(FROM_UNIXTIME(0), '%Y-%m-%d %H:%i'), @@session.sql_mode, @@session.collation_connection, @client,"
                    + " @@session.autocommit, CONCAT('€ ', ?, ' 😀')");
            PreparedStatement insert = conn.prepareStatement("INSERT INTO \"accounts\" (\"name\", \"balance\") VALUES (?, ?)");
            PreparedStatement move = conn.prepareStatement("UPDATE \"accounts\" SET \"balance\" = \"balance\" + ? WHERE \"name\" = ?");
            PreparedStatement balanceOf = conn.prepareStatement("SELECT \"balance\" FROM \"accounts\" WHERE \"name\" = ?");
            PreparedStatement missingTable = conn.prepareStatement("SELECT ? FROM DUAL WHERE 1 = 1");
            PreparedStatement putDoc = conn.prepareStatement("INSERT INTO documents (name, body, data) VALUES (?, ?, ?)", Statement.RETURN_GENERATED_KEYS);
            PreparedStatement getDoc = conn.prepareStatement("SELECT body, data FROM documents WHERE id = ?");
            PreparedStatement delDoc = conn.prepareStatement("DELETE FROM documents WHERE id = ?");
            ExecutorService threads = Executors.newFixedThreadPool(3);
            try {
                run(name, cfg, (i, users) -> {
                    String a = name + "-" + i + "-a", b = name + "-" + i + "-b", c = name + "-" + i + "-c";
                    state.setString(1, "ü" + i);
                    try (ResultSet rs = state.executeQuery()) {
                        expect(rs.next(), "no session state row");
                        users.observe(rs.getString(1));
                        equal(rs.getString(2), "+08:45", "time_zone");
                        equal(rs.getString(3), "1970-01-01 08:45", "FROM_UNIXTIME(0)");
                        expect(rs.getString(4).contains("ANSI_QUOTES") && rs.getString(4).contains("STRICT_ALL_TABLES"), "sql_mode is " + rs.getString(4));
                        equal(rs.getString(5), "utf8mb4_unicode_ci", "collation_connection");
                        equal(rs.getString(6), name, "@client");
                        equal(rs.getInt(7), 0, "autocommit");
                        equal(rs.getString(8), "€ ü" + i + " 😀", "UTF-8 round trip");
                    }
                    conn.commit();

                    // A transfer that commits (inserts as a batch), and one that rolls back.
                    insert.setString(1, a);
                    insert.setBigDecimal(2, new BigDecimal("100"));
                    insert.addBatch();
                    insert.setString(1, b);
                    insert.setBigDecimal(2, BigDecimal.ZERO);
                    insert.addBatch();
                    equal(insert.executeBatch().length, 2, "batch size");
                    move.setBigDecimal(1, new BigDecimal("-30.50"));
                    move.setString(2, a);
                    equal(move.executeUpdate(), 1, "debited rows");
                    move.setBigDecimal(1, new BigDecimal("30.50"));
                    move.setString(2, b);
                    equal(move.executeUpdate(), 1, "credited rows");
                    conn.commit();
                    insert.setString(1, c);
                    insert.setBigDecimal(2, new BigDecimal("5"));
                    insert.executeUpdate();
                    conn.rollback();
                    balanceOf.setString(1, a);
                    equal(one(balanceOf), "69.50", "balance of a after a commit and a rollback");
                    balanceOf.setString(1, b);
                    equal(one(balanceOf), "30.50", "balance of b");
                    balanceOf.setString(1, c);
                    try (ResultSet rs = balanceOf.executeQuery()) {
                        expect(!rs.next(), "the rolled-back account exists");
                    }
                    conn.commit();

                    // Errors, then the connection goes on; a savepoint keeps
                    // the work before an error.
                    try (Statement st = conn.createStatement()) {
                        st.executeQuery("SELECT * FROM no_such_table");
                        throw new Mismatch("a missing table did not fail");
                    } catch (SQLException e) {
                        equal(e.getErrorCode(), 1146, "error of a missing table");
                    }
                    conn.rollback();
                    insert.setString(1, a);
                    insert.setBigDecimal(2, BigDecimal.ONE);
                    try {
                        insert.executeUpdate();
                        throw new Mismatch("a duplicate key did not fail");
                    } catch (SQLException e) {
                        equal(e.getErrorCode(), 1062, "error of a duplicate key");
                    }
                    conn.rollback();
                    move.setBigDecimal(1, new BigDecimal("-1"));
                    move.setString(2, a);
                    move.executeUpdate();
                    Savepoint sp = conn.setSavepoint();
                    move.setBigDecimal(1, new BigDecimal("-1000"));
                    move.setString(2, b);
                    try {
                        move.executeUpdate();
                        throw new Mismatch("a negative balance did not fail");
                    } catch (SQLException e) {
                        equal(e.getErrorCode(), 4025, "error of a CHECK violation");
                    }
                    conn.rollback(sp);
                    conn.commit();
                    balanceOf.setString(1, a);
                    equal(one(balanceOf), "68.50", "balance after the savepoint");
                    balanceOf.setString(1, b);
                    equal(one(balanceOf), "30.50", "balance after the failed update");
                    missingTable.setString(1, "still here");
                    equal(one(missingTable), "still here", "a prepared statement after errors");
                    conn.commit();

                    // 1.5 MiB of text and of binary, both ways, through the
                    // binary protocol and the text protocol.
                    String body = bigText(i);
                    byte[] data = bigBytes(i);
                    putDoc.setString(1, a);
                    putDoc.setString(2, body);
                    putDoc.setBytes(3, data);
                    equal(putDoc.executeUpdate(), 1, "inserted documents");
                    long doc;
                    try (ResultSet rs = putDoc.getGeneratedKeys()) {
                        expect(rs.next(), "no generated key");
                        doc = rs.getLong(1);
                    }
                    conn.commit();
                    getDoc.setLong(1, doc);
                    try (ResultSet rs = getDoc.executeQuery()) {
                        expect(rs.next(), "no document");
                        equal(rs.getString(1), body, "the large text read back");
                        expect(Arrays.equals(rs.getBytes(2), data), "the large blob read back differs");
                    }
                    try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT body FROM documents WHERE id = " + doc)) {
                        expect(rs.next(), "no document (text protocol)");
                        equal(rs.getString(1), body, "the large text read back (text protocol)");
                    }
                    delDoc.setLong(1, doc);
                    equal(delDoc.executeUpdate(), 1, "deleted documents");
                    conn.commit();

                    // The pool, from three threads.
                    List<Future<?>> done = new ArrayList<>();
                    for (int k = 0; k < 3; k++) {
                        final int kk = k;
                        done.add(threads.submit(() -> {
                            try (Connection pc = pool.getConnection();
                                    PreparedStatement ps = pc.prepareStatement("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), ? * 2")) {
                                ps.setInt(1, kk);
                                try (ResultSet rs = ps.executeQuery()) {
                                    expect(rs.next(), "no pooled row");
                                    expect(cfg.backendUsers.contains(rs.getString(1)), "pooled current_user " + rs.getString(1));
                                    equal(rs.getInt(2), 2 * kk, "pooled " + kk + " * 2");
                                }
                                try (PreparedStatement ins = pc.prepareStatement("INSERT INTO events (client, note) VALUES (?, ?)")) {
                                    ins.setString(1, name);
                                    ins.setString(2, "pool-" + i + "-" + kk);
                                    ins.executeUpdate();
                                }
                            }
                            return null;
                        }));
                    }
                    for (Future<?> f : done) {
                        f.get();
                    }
                });
            } finally {
                threads.shutdownNow();
            }
        }
    }
}
