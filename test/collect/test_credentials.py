"""pix-collect over HTTPS with each credential pixd accepts (issue 20): a bearer token read from
--token-file, a client certificate (--cert/--key, mutual TLS), the server verified with --cacert.
A refused credential stops the program with exit status 4 and confirms nothing.

Certificates come from scripts/pki.sh; credentials are registered with the extension's own
functions (pix_token_issue, pix_certificate_add), as an operator would.

Seen failing: with the Authorization header left out of http.c, the token test got exit 4 and
nothing in pix_received.
"""

import os
import shutil
import subprocess

import pixe2e
from pixe2e import Pixd, psql
from collecttest import Collect, queue_state, received

PKI = os.path.join(pixe2e.ROOT, "scripts", "pki.sh")
DB = "pix_collect_tls"


def pki(*args):
    return subprocess.run([PKI, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60).stdout.strip()


_state = {}


def setUpModule():
    d = os.path.join(pixe2e.TMP, "collect-pki")
    shutil.rmtree(d, ignore_errors=True)
    pki("ca", d)
    pki("server", d)
    for name in ("a", "b"):
        pki("client", d, name)
    pixe2e.create_database(DB)
    a, b = pixe2e.new_ispb(), pixe2e.new_ispb()
    psql(f"SELECT pix_certificate_add('{a}', '{pki('fingerprint', os.path.join(d, 'a.crt'))}', 'a')", dbname=DB)
    psql(f"SELECT pix_certificate_add('{b}', '{pki('fingerprint', os.path.join(d, 'b.crt'))}', 'b')", dbname=DB)
    token = psql(f"SELECT pix_token_issue('{a}', 'collector')", dbname=DB).strip()
    with open(os.path.join(d, "a.token"), "w") as f:
        f.write(token + "\n")
    with open(os.path.join(d, "wrong.token"), "w") as f:
        f.write("pix_" + "0" * 64 + "\n")
    pixd = Pixd(pixe2e.conninfo(DB), wait_ms=500,
                extra=["--auth", "token,mtls", "--tls-cert", os.path.join(d, "server.crt"),
                       "--tls-key", os.path.join(d, "server.key"), "--client-ca", os.path.join(d, "ca.crt")]).start()
    _state.update(dir=d, A=a, B=b, pixd=pixd)


def tearDownModule():
    _state["pixd"].stop()
    pixe2e.drop_database(DB)


class TestCredentials(pixe2e.unittest.TestCase):
    def setUp(self):
        self.d, self.A, self.B, self.pixd = _state["dir"], _state["A"], _state["B"], _state["pixd"]
        self.url = f"https://127.0.0.1:{self.pixd.port}"
        self.sink_db = f"collect_tls_{pixe2e.new_ispb()}"
        self.addCleanup(lambda: psql(f"DROP DATABASE IF EXISTS {self.sink_db} WITH (FORCE)", check=False))

    def path(self, name):
        return os.path.join(self.d, name)

    def collect(self, *extra):
        return Collect(self.url, self.A, sink=pixe2e.conninfo(self.sink_db),
                       extra=["--cacert", self.path("ca.crt"), "--once", *extra])

    def drains(self, *extra):
        ids = pixe2e.insert_messages(DB, self.A, 120)
        c = self.collect(*extra)
        self.assertEqual(c.run(timeout=120), 0, c.log())
        got = set(received(self.sink_db, None))
        self.assertFalse(set(ids) - got, "messages missing")  # and those the refused tests left behind:
        self.assertFalse(got - set(pixe2e.queued_ids(DB, self.A)), "messages nobody sent")
        self.assertEqual(queue_state(DB, self.A), (0, 0, 0))

    def refused(self, *extra):
        pixe2e.insert_messages(DB, self.A, 5)
        before = queue_state(DB, self.A)
        c = self.collect(*extra)
        self.assertEqual(c.run(timeout=60), 4, c.log())
        self.assertIn("refused the credentials", c.log())
        self.assertEqual(received(self.sink_db, None), [])
        self.assertEqual(queue_state(DB, self.A)[:2], before[:2], "a refused collector confirmed something")

    def test_bearer_token(self):
        self.drains("--token-file", self.path("a.token"))

    def test_client_certificate(self):
        self.drains("--cert", self.path("a.crt"), "--key", self.path("a.key"))

    def test_unknown_token_exits_4(self):
        self.refused("--token-file", self.path("wrong.token"))

    def test_another_institutions_certificate_exits_4(self):
        self.refused("--cert", self.path("b.crt"), "--key", self.path("b.key"))

    def test_no_credential_exits_4(self):
        self.refused()

    def test_a_token_is_never_sent_in_clear(self):
        c = Collect(f"http://127.0.0.1:{self.pixd.port}", self.A, sink=pixe2e.conninfo(self.sink_db),
                    extra=["--token-file", self.path("a.token")])
        self.assertEqual(c.run(timeout=30), 2, c.log())
