# Shared by the bench scripts (sourced). Only 127.0.0.1 is ever used.

# A free port below the ephemeral range, so that the client's TIME_WAIT
# sockets of short-connection runs never crowd a server's port.
free_port() {
  python3 -c 'import random, socket
for _ in range(200):
    p = random.randint(20000, 30000); s = socket.socket()
    try: s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass'
}

# The port of the first "listening on 127.0.0.1:PORT" line of a preforkd log.
port_of() { grep -o 'listening on 127.0.0.1:[0-9]*' "$1" | head -1 | sed 's/.*://'; }
