"""The mysqlclient (MySQLdb, on libmariadb) client of the matrix (internal/clientmatrix).

Logs in with mysql_native_password (libmariadb cannot do
caching_sha2_password's full authentication over plaintext), asks for
utf8mb4 as an application would, then does the work in mysql_dbapi.py
with its own session state: a positive time zone offset and sql_mode ANSI
(so 'x' || 'y' concatenates).
"""

import sys

import MySQLdb

import mysql_dbapi

SESSION = mysql_dbapi.Session(
    name="mysqlclient",
    time_zone="+05:45",
    epoch="1970-01-01 05:45",
    sql_mode="ANSI,STRICT_TRANS_TABLES",
    set_names=None,
    collation="utf8mb4_general_ci",
    pipes="xy",
)


def connect(cfg):
    return MySQLdb.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password,
                           database=cfg.database, charset="utf8mb4", connect_timeout=20)


if __name__ == "__main__":
    sys.exit(mysql_dbapi.main(SESSION, connect))
