"""The PyMySQL client of the matrix (internal/clientmatrix).

Logs in with caching_sha2_password (the RSA key exchange over plaintext,
which needs the cryptography package), then does the work in
mysql_dbapi.py with its own session state: a negative time zone offset,
strict ANSI_QUOTES mode, and SET NAMES with a collation other than the
server's.
"""

import sys

import pymysql

import mysql_dbapi

SESSION = mysql_dbapi.Session(
    name="pymysql",
    time_zone="-03:30",
    epoch="1969-12-31 20:30",
    sql_mode="ANSI_QUOTES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION",
    set_names="SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
    collation="utf8mb4_unicode_ci",
    pipes=0,
)


def connect(cfg):
    return pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password,
                           database=cfg.database, charset="utf8mb4", connect_timeout=20, autocommit=False)


if __name__ == "__main__":
    sys.exit(mysql_dbapi.main(SESSION, connect))
