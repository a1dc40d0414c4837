#!/usr/bin/env python3
"""SCRAM-SHA-256 credentials for ejabberd accounts, as Erlang terms.

    scram_creds.py PREFIX COUNT PASSWORD OFFSET > accounts.terms

One line per account PREFIX<OFFSET> .. PREFIX<OFFSET+COUNT-1>:
{<<"user">>,<<"StoredKey">>,<<"ServerKey">>,<<"Salt">>}. (base64, as
ejabberd 23.01 stores them in #scram{}), each with its own random 16-byte
salt and 4096 iterations. Used by `ejabberd.sh provision`.
"""

import base64
import hashlib
import hmac
import os
import sys
from multiprocessing import Pool

PREFIX, COUNT, PASSWORD, OFFSET = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])


def creds(i):
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD, salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b(x):
        return base64.b64encode(x).decode()

    return '{<<"%s%d">>,<<"%s">>,<<"%s">>,<<"%s">>}.' % (PREFIX, i, b(stored), b(server), b(salt))


if __name__ == "__main__":
    with Pool(os.cpu_count() or 1) as pool:
        for line in pool.imap(creds, range(OFFSET, OFFSET + COUNT), chunksize=256):
            print(line)
