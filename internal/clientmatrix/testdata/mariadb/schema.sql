-- The tables every MariaDB client program of the matrix works on, made by
-- the test (as root) in a fresh database that both backend users may use.
CREATE TABLE accounts (
  id      INT AUTO_INCREMENT PRIMARY KEY,
  name    VARCHAR(100) NOT NULL UNIQUE,
  balance DECIMAL(12, 2) NOT NULL,
  CONSTRAINT balance_not_negative CHECK (balance >= 0)
) ENGINE = InnoDB;

CREATE TABLE documents (
  id   INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  body LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
  data LONGBLOB NOT NULL
) ENGINE = InnoDB;

CREATE TABLE events (
  id     BIGINT AUTO_INCREMENT PRIMARY KEY,
  at     TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  client VARCHAR(40) NOT NULL,
  note   VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL
) ENGINE = InnoDB;

-- expect signals 'MISMATCH: <what>' (SQLSTATE 45000, error 1644) unless ok
-- is true: the mariadb CLI script asserts with it.
DELIMITER //
CREATE PROCEDURE expect(ok BOOLEAN, what VARCHAR(200))
BEGIN
  DECLARE msg VARCHAR(255) DEFAULT CONCAT('MISMATCH: ', what);
  IF ok IS NOT TRUE THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = msg;
  END IF;
END //
DELIMITER ;
