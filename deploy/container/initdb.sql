-- One database and user per tenant (compose.yaml's MariaDB runs it once).
CREATE DATABASE centro1; CREATE USER 'centro1'@'%' IDENTIFIED BY 'secret1';
GRANT ALL ON centro1.* TO 'centro1'@'%';
CREATE DATABASE centro2; CREATE USER 'centro2'@'%' IDENTIFIED BY 'secret2';
GRANT ALL ON centro2.* TO 'centro2'@'%';
