"""A TPM 2.0 command the tests send, by hand (no tpm2-tools on the host or in the test guest):
TPM2_CreatePrimary of an ECC P-256 signing key under the endorsement hierarchy, with an empty
password. Its public key comes from the TPM's endorsement seed by a fixed derivation: the same
TPM state gives the same key at every start (the state survived), a fresh TPM another one (a
clone's). Layouts from the TPM 2.0 Library, Part 3 (CreatePrimary) and Part 2 (structures)."""

import struct

ST_SESSIONS = 0x8002
CC_CREATE_PRIMARY = 0x00000131
RH_ENDORSEMENT = 0x4000000B
RS_PW = 0x40000009
ALG_ECC, ALG_SHA256, ALG_NULL, ECC_NIST_P256 = 0x0023, 0x000B, 0x0010, 0x0003
# fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign
ATTRIBUTES = 0x00000002 | 0x00000010 | 0x00000020 | 0x00000040 | 0x00040000


def create_primary():
    """The command's bytes."""
    session = struct.pack(">IHBH", RS_PW, 0, 0, 0)                # password session, empty
    sensitive = struct.pack(">HHH", 4, 0, 0)                       # TPM2B_SENSITIVE_CREATE: no auth, no data
    public = struct.pack(">HHIH", ALG_ECC, ALG_SHA256, ATTRIBUTES, 0)   # type, nameAlg, attributes, policy
    public += struct.pack(">HHHH", ALG_NULL, ALG_NULL, ECC_NIST_P256, ALG_NULL)  # sym, scheme, curve, kdf
    public += struct.pack(">HH", 0, 0)                             # unique: empty x, y
    body = struct.pack(">I", RH_ENDORSEMENT) + struct.pack(">I", len(session)) + session + sensitive
    body += struct.pack(">H", len(public)) + public + struct.pack(">H", 0) + struct.pack(">I", 0)
    return struct.pack(">HII", ST_SESSIONS, 10 + len(body), CC_CREATE_PRIMARY) + body


def response_code(data):
    """The response's code (0: success)."""
    return struct.unpack(">HII", data[:10])[2]


def public_point(data):
    """(x, y) of the created key from a CreatePrimary response, as hex."""
    if response_code(data) != 0:
        raise ValueError(f"TPM error {response_code(data):#x}")
    offset = 10 + 4 + 4          # header, objectHandle, parameterSize
    offset += 2                  # TPM2B_PUBLIC size
    offset += 2 + 2 + 4          # type, nameAlg, objectAttributes
    (policy,) = struct.unpack(">H", data[offset:offset + 2])
    offset += 2 + policy + 8     # authPolicy, ECC parameters
    (xs,) = struct.unpack(">H", data[offset:offset + 2])
    x = data[offset + 2:offset + 2 + xs]
    offset += 2 + xs
    (ys,) = struct.unpack(">H", data[offset:offset + 2])
    y = data[offset + 2:offset + 2 + ys]
    return x.hex(), y.hex()


def shell_printf():
    """The command as a busybox printf argument (\\xHH escapes), for the guest."""
    return "".join(f"\\x{b:02x}" for b in create_primary())


def transact(path, command, timeout=10):
    """Send one command on swtpm's data socket (bhyve's channel) and return the response."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(command)
        data = sock.recv(10)
        (size,) = struct.unpack(">I", data[2:6])
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()
