"""The message JSON as served: field order, two-decimal valor, escaping, and the generator's validity."""

import datetime
import json
import re
import subprocess

from pixe2e import (MESSAGE_KEYS, PARTY_KEYS, PixTestCase, _ispbs, insert_sql, make_message, messages_of, new_ispb,
                    psql, valid_cnpj, valid_cpf)

SPEC_EXAMPLE = ('{"endToEndId":"E320749862024022119277T3lEBbUM0z","valor":90.20,'
                '"pagador":{"nome":"Marcos José","cpfCnpj":"98716278151","ispb":"32074986","agencia":"0001",'
                '"contaTransacional":"1231231","tipoConta":"CACC"},'
                '"recebedor":{"nome":"Flavio José","cpfCnpj":"77615678242","ispb":"00000000","agencia":"0361",'
                '"contaTransacional":"1210098","tipoConta":"SVGS"},'
                '"campoLivre":"","txId":"h7a786d8a7s6gd1hgs","dataHoraPagamento":"2022-07-23T19:47:18.108Z"}')

VALOR_RE = re.compile(rb'"valor":\s*([0-9.eE+-]+)\s*[,}]')


def ordered(value):
    """JSON text -> nested lists of (key, value) pairs, keeping the order of keys."""
    return json.loads(value, object_pairs_hook=list)


def spec_example_as_dict():
    return json.loads(SPEC_EXAMPLE)


class TestMessageFormat(PixTestCase):
    def read_all(self, ispb, expect):
        c = self.collector(ispb, accept="multipart/json")
        r = c.start()
        bodies = [r]
        msgs = messages_of(r) if r.status == 200 else []
        for _ in range(expect // 10 + 2):
            if len(msgs) >= expect:
                break
            r = c.next()
            if r.status != 200:
                break
            bodies.append(r)
            msgs += messages_of(r)
        return msgs, bodies

    def test_spec_example_exactly(self):
        _ispbs.add("00000000")
        m = spec_example_as_dict()
        m["valor"] = "90.20"
        psql(insert_sql([m]), dbname=self.db)
        c = self.collector("00000000")
        r = c.start()
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(ordered(r.body), ordered(SPEC_EXAMPLE), "field order and values as in the contract")
        self.assertRegex(r.body, rb'"valor":\s*90\.20\s*,')
        self.assertEqual(c.delete().status, 200)  # confirms it
        self.assertEqual(self.collector("00000000").start().status, 204)

    def test_valor_always_two_decimals(self):
        ispb = new_ispb()
        values = ["5.00", "0.01", "0.10", "10.10", "1234567890123.45", "100.00", "7.05"]
        msgs = [make_message(ispb, valor=v) for v in values]
        psql(insert_sql(msgs), dbname=self.db)
        got, bodies = self.read_all(ispb, len(values))
        raw = [v.decode() for b in bodies for v in VALOR_RE.findall(b.body)]
        self.assertEqual(raw, values, "valor rendered with exactly two decimals, exactly as stored")

    def test_strings_escaped(self):
        ispb = new_ispb()
        tricky = 'aspas " barra \\ slash / nl \n cr \r tab \t bell \x07 us \x1f del \x7f é 中 🙂 \u2028 \u2029 end'
        m = make_message(ispb, campoLivre=tricky[:140])
        m["pagador"]["nome"] = 'José "Zé" d\'Ávila \\ 🙂'
        m["recebedor"]["nome"] = "Ñandú \t Çedilha"
        try:
            psql(insert_sql([m]), dbname=self.db)
        except RuntimeError as e:
            self.fail(f"the database refused a message whose strings need escaping: {e}")
        c = self.collector(ispb)
        r = c.start()
        self.assertEqual(r.status, 200, repr(r))
        self.assertFalse(any(b < 0x20 for b in r.body), "no raw control characters in JSON text")
        got = json.loads(r.body.decode("utf-8"))  # strict: also refuses raw control characters
        self.assertEqual(got["campoLivre"], m["campoLivre"])
        self.assertEqual(got["pagador"]["nome"], m["pagador"]["nome"])
        self.assertEqual(got["recebedor"]["nome"], m["recebedor"]["nome"])

    def test_inserted_message_round_trips(self):
        ispb = new_ispb()
        m = make_message(ispb)
        m["pagador"]["tipoConta"] = "TRAN"
        m["recebedor"]["tipoConta"] = "SLRY"
        m["txId"] = ""
        m["campoLivre"] = "x" * 140
        psql(insert_sql([m]), dbname=self.db)
        r = self.collector(ispb).start()
        self.assertEqual(r.status, 200)
        expected = json.loads(json.dumps(m).replace(f'"valor": "{m["valor"]}"', f'"valor": {m["valor"]}'))
        self.assertEqual(r.json(), expected)
        self.assertEqual([k for k, _ in ordered(r.body)], MESSAGE_KEYS)

    def test_invalid_message_refused_by_the_database_and_never_served(self):
        ispb = new_ispb()
        bad = make_message(ispb)
        bad["pagador"]["cpfCnpj"] = bad["pagador"]["cpfCnpj"][:-1] + str((int(bad["pagador"]["cpfCnpj"][-1]) + 1) % 10)
        out = psql(insert_sql([bad]), dbname=self.db, check=False)
        self.assertIsInstance(out, subprocess.CompletedProcess)
        self.assertNotEqual(out.returncode, 0, "a bad check digit must be refused")
        self.assertIn("cpfCnpj", out.stderr)
        self.assertEqual(self.collector(ispb).start().status, 204)

    def test_generated_messages_are_valid(self):
        ispb = new_ispb()
        n = 100
        r = self.http.post(f"/api/util/msgs/{ispb}/{n}")
        self.assertEqual(r.status, 201, repr(r))
        msgs, bodies = self.read_all(ispb, n)
        self.assertEqual(len(msgs), n)
        raw_valores = [v.decode() for b in bodies for v in VALOR_RE.findall(b.body)]
        self.assertEqual(len(raw_valores), n)
        for v in raw_valores:
            self.assertRegex(v, r"^(0|[1-9]\d{0,12})\.\d\d$")
            self.assertGreater(float(v), 0)
        for b in bodies:
            for obj in ordered(b.body):
                self.assertEqual([k for k, _ in obj], MESSAGE_KEYS)
                d = dict(obj)
                self.assertEqual([k for k, _ in d["pagador"]], PARTY_KEYS)
                self.assertEqual([k for k, _ in d["recebedor"]], PARTY_KEYS)
        tipos = set()
        seen = set()
        for m in msgs:
            ctx = json.dumps(m, ensure_ascii=False)
            e2e = m["endToEndId"]
            self.assertNotIn(e2e, seen, "endToEndId unique")
            seen.add(e2e)
            self.assertRegex(e2e, r"^E\d{8}\d{12}[A-Za-z0-9]{11}$", ctx)
            self.assertEqual(e2e[1:9], m["pagador"]["ispb"], ctx)
            datetime.datetime.strptime(e2e[9:21], "%Y%m%d%H%M")
            self.assertEqual(m["recebedor"]["ispb"], ispb)
            for side in ("pagador", "recebedor"):
                p = m[side]
                self.assertRegex(p["ispb"], r"^\d{8}$", ctx)
                self.assertTrue(valid_cpf(p["cpfCnpj"]) or valid_cnpj(p["cpfCnpj"]), f"{side}.cpfCnpj: {ctx}")
                self.assertRegex(p["agencia"], r"^\d{4}$", ctx)
                self.assertRegex(p["contaTransacional"], r"^\d{1,20}$", ctx)
                self.assertIn(p["tipoConta"], {"CACC", "SVGS", "SLRY", "TRAN"}, ctx)
                tipos.add(p["tipoConta"])
                self.assertTrue(1 <= len(p["nome"]) <= 140, ctx)
            self.assertLessEqual(len(m["campoLivre"]), 140, ctx)
            self.assertRegex(m["txId"], r"^[A-Za-z0-9]{0,35}$", ctx)
            self.assertRegex(m["dataHoraPagamento"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ctx)
            datetime.datetime.strptime(m["dataHoraPagamento"], "%Y-%m-%dT%H:%M:%S.%fZ")
        self.assertEqual(tipos, {"CACC", "SVGS", "SLRY", "TRAN"}, "all four account types")


if __name__ == "__main__":
    import unittest
    unittest.main()
