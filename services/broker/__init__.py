"""The Mosquitto broker: production config, per-role ACL, password file and TLS certificates.

Mosquitto does the brokering; this package renders what it needs (``edgeloop broker
render``), wraps ``mosquitto_passwd`` so passwords never sit on a command line
(``edgeloop broker passwd``) and makes a CA with server and client certificates
(``edgeloop broker certs``).
"""
