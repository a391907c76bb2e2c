/*
 * generate.c — pix_generate_messages(ispb, number): inserts random, realistic
 * messages addressed to one institution (POST /api/util/msgs/{ispb}/{number}).
 *
 * "Realistic" means a collector cannot tell them from real traffic by their
 * shape: Brazilian names with their accents (José, Conceição), CPFs and CNPJs
 * with valid check digits (mostly people, some companies), payers at real
 * institutions' ISPBs, endToEndIds in the Central Bank's layout stamped with
 * the current UTC minute, amounts with cents (mostly small, a few large), all
 * four account types, QR-code txIds and the odd free-text note.
 *
 * The rows go in through the shared INSERT (insert.c), 1000 per statement, so
 * the table's triggers treat them as any client's: validated and rendered
 * (message.c), queued and NOTIFYed (the statement trigger). The generator also
 * checks each message against validate.c before sending it: a generator bug
 * should say so, not look like a rejected client message.
 *
 * Randomness is pg_prng (pg_global_prng_state): test data, not secrets. The
 * function runs SECURITY DEFINER with search_path = pg_catalog, pg_temp, hence
 * the fully qualified SQL.
 */
#include "pix.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "auth.h"
#include "insert.h"
#include "validate.h"

#define CHUNK_ROWS 1000

/* One generated message: the strings pix_message points into. */
typedef struct generated
{
	char		end_to_end_id[PIX_END_TO_END_ID_LEN + 1];
	char		valor[32];
	char		pagador_nome[256],
				recebedor_nome[256];
	char		pagador_cpf_cnpj[PIX_CNPJ_LEN + 1],
				recebedor_cpf_cnpj[PIX_CNPJ_LEN + 1];
	char		pagador_agencia[PIX_AGENCIA_LEN + 1],
				recebedor_agencia[PIX_AGENCIA_LEN + 1];
	char		pagador_conta[PIX_CONTA_MAX + 1],
				recebedor_conta[PIX_CONTA_MAX + 1];
	char		tx_id[PIX_TX_ID_MAX + 1];
	pix_message m;
} generated;

/* What every message of one call shares: the receiver and the moment. */
typedef struct call_context
{
	const char *ispb;
	TimestampTz now;			/* truncated to milliseconds */
	char		minute[13];		/* yyyyMMddHHmm, UTC */
	char		data_hora[PIX_DATA_HORA_LEN + 1];	/* YYYY-MM-DDTHH:MM:SS.mmmZ */
	bool		emoji_ok;		/* the database can store any character */
} call_context;

static int32 count_arg(FunctionCallInfo fcinfo);
static void init_call(call_context *cx, const char *ispb);
static uint64 below(uint64 n);
static bool chance(double p);
static void random_chars(char *out, int n, const char *alphabet);
static void random_cpf(char *out);
static void random_cnpj(char *out);
static void random_person(char *out, size_t cap);
static void random_company(char *out, size_t cap);
static void random_party(pix_party *p, char *nome, char *cpf_cnpj,
						 char *agencia, char *conta, bool company_likely);
static void random_valor(char *out, size_t cap);
static void random_tx_id(char *out);
static const char *random_note(const call_context *cx);
static void generate_one(generated *g, const call_context *cx);

/* Real institutions' ISPBs: the payer's bank. */
static const char *const payer_ispbs[] = {
	"00000000",					/* Banco do Brasil */
	"00360305",					/* Caixa Econômica Federal */
	"60746948",					/* Bradesco */
	"60701190",					/* Itaú Unibanco */
	"90400888",					/* Santander */
	"18236120",					/* Nu Pagamentos (Nubank) */
	"00416968",					/* Banco Inter */
	"08561701",					/* PagSeguro (PagBank) */
	"10573521",					/* Mercado Pago */
	"31872495",					/* C6 Bank */
	"22896431",					/* PicPay */
	"30306294",					/* BTG Pactual */
	"92702067",					/* Banrisul */
	"00000208",					/* BRB */
	"01181521",					/* Sicredi */
	"02038232",					/* Sicoob */
};

static const char *const first_names[] = {
	"José", "João", "Maria", "Ana", "Antônio", "Francisco",
	"Conceição", "Luíza", "Márcia", "Sebastião", "Inês", "Cláudio",
	"Flávio", "Marcos", "Lúcia", "Fátima", "Raimundo", "Luís",
	"André", "Thaís", "Vitória", "Débora", "Júlia", "Letícia",
	"Beatriz", "Caio", "Rafael", "Gabriel", "Mônica", "Célia",
	"Sérgio", "Patrícia", "Otávio", "Aurélio", "Joaquim", "Benedita",
	"Rosângela", "Valéria", "Cecília", "Heitor",
};

static const char *const last_names[] = {
	"Silva", "Santos", "Oliveira", "Souza", "Rodrigues",
	"Ferreira", "Alves", "Pereira", "Lima", "Gomes",
	"Ribeiro", "Carvalho", "Araújo", "Conceição", "Simões",
	"Magalhães", "Guimarães", "Assunção", "Brandão", "Gonçalves",
	"Falcão", "Leão", "Nóbrega", "Sá", "Romão",
	"Damião", "Estêvão", "Moraes", "Cavalcanti", "Nascimento",
	"Patrício", "Julião",
};

static const char *const company_stems[] = {
	"Padaria Pão de Açúcar", "Mercadinho São João",
	"Farmácia Boa Saúde", "Açougue do Zé",
	"Papelaria Criação", "Auto Peças Ceará",
	"Restaurante Sabor Mineiro", "Confecções Conceição",
	"Distribuidora Paraná", "Clínica Odontológica Sorriso",
	"Pet Shop Amigo Fiel", "Construtora Horizonte",
};

static const char *const company_suffixes[] = {"Ltda", "ME", "EIRELI", "S.A.",
"Ltda ME"};

/*
 * Some notes need escaping on purpose: quotes, a slash. All of them exist in
 * Latin-1 too.
 */
static const char *const notes[] = {
	"Aluguel de março",
	"Rateio do churrasco",
	"Conta de luz",
	"Mensalidade da academia",
	"Pagamento ref. pedido nº 4521",
	"Obrigado pelo \"bolo\"!",
	"Devolução do empréstimo",
	"Condomínio - bloco B / apto 302",
	"Dízimo",
	"Uber ida e volta",
};

/*
 * Emoji are four-byte UTF-8 yet one character each: only where the database
 * can store them.
 */
static const char *const emoji_notes[] = {
	"Presente de aniversário 🎂",
	"Pizza de sexta 🍕",
	"Valeu! 🙏",
};

static const char *const account_types[] = {"CACC", "CACC", "CACC", "CACC",
	"CACC", "CACC", "CACC", "SVGS",
"SVGS", "SLRY", "TRAN", "TRAN"};

static const char digits[] = "0123456789";
static const char alnums[] =
"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#define PICK(array) ((array)[below(lengthof(array))])

/*
 * A NULL or out-of-range count is a PX002 that names the limit (the HTTP
 * server answers 400).
 */
static int32
count_arg(FunctionCallInfo fcinfo)
{
	int32		number = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);

	if (number < 1 || number > pix_max_generate)
		ereport(ERROR,
				(errcode(ERRCODE_PIX_INVALID_COUNT),
				 errmsg("invalid number of messages"),
				 errdetail("The number of messages must be between 1 and %d (pix.max_generate).",
						   pix_max_generate)));
	return number;
}

/* "Now" once per call, in the two forms the messages need, both UTC. */
static void
init_call(call_context *cx, const char *ispb)
{
	struct pg_tm tm;
	fsec_t		fsec;

	cx->ispb = ispb;
	cx->emoji_ok = GetDatabaseEncoding() == PG_UTF8 ||
		GetDatabaseEncoding() == PG_SQL_ASCII;
	cx->now = GetCurrentTimestamp();
	cx->now -= cx->now % 1000;	/* after 2000: never negative */
	if (timestamp2tm(cx->now, NULL, &tm, &fsec, NULL, NULL) != 0)
		elog(ERROR, "pix: the clock is out of range");
	snprintf(cx->minute, sizeof(cx->minute), "%04d%02d%02d%02d%02d",
			 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min);
	snprintf(cx->data_hora, sizeof(cx->data_hora),
			 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year, tm.tm_mon,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (int) (fsec / 1000));
}

/* Uniform in 0..n-1. */
static uint64
below(uint64 n)
{
	return pg_prng_uint64_range(&pg_global_prng_state, 0, n - 1);
}

static bool
chance(double p)
{
	return pg_prng_double(&pg_global_prng_state) < p;
}

static void
random_chars(char *out, int n, const char *alphabet)
{
	size_t		size = strlen(alphabet);

	for (int i = 0; i < n; i++)
		out[i] = alphabet[below(size)];
	out[n] = '\0';
}

static void
random_cpf(char *out)
{
	do
	{
		random_chars(out, 9, digits);
		pix_complete_cpf(out);
	} while (!pix_valid_cpf(out));	/* only 000.000.000-00 and the like loop */
}

/* A company's head office: branch 0001, as most Pix receivers' CNPJs. */
static void
random_cnpj(char *out)
{
	do
	{
		random_chars(out, 8, digits);
		memcpy(out + 8, "0001", 4);
		pix_complete_cnpj(out);
	} while (!pix_valid_cnpj(out));
}

/*
 * First name and one or two surnames: "Maria Conceição", "João Araújo Simões".
 */
static void
random_person(char *out, size_t cap)
{
	if (chance(0.4))
		snprintf(out, cap, "%s %s %s", PICK(first_names), PICK(last_names),
				 PICK(last_names));
	else
		snprintf(out, cap, "%s %s", PICK(first_names), PICK(last_names));
}

static void
random_company(char *out, size_t cap)
{
	snprintf(out, cap, "%s %s", PICK(company_stems), PICK(company_suffixes));
}

/*
 * A person with a CPF, or (less often) a company with a CNPJ; digital banks'
 * branch is 0001.
 */
static void
random_party(pix_party *p, char *nome, char *cpf_cnpj, char *agencia,
			 char *conta, bool company_likely)
{
	int			conta_len =
	chance(0.05) ? (int) below(PIX_CONTA_MAX) + 1 : 5 + (int) below(6);

	if (chance(company_likely ? 0.25 : 0.1))
	{
		random_company(nome, 256);
		random_cnpj(cpf_cnpj);
	}
	else
	{
		random_person(nome, 256);
		random_cpf(cpf_cnpj);
	}
	if (chance(0.4))
		strcpy(agencia, "0001");
	else
		random_chars(agencia, PIX_AGENCIA_LEN, digits);
	random_chars(conta, conta_len, digits);
	conta[0] = digits[1 + below(9)];	/* account numbers do not start with 0 */
	p->nome = nome;
	p->cpf_cnpj = cpf_cnpj;
	p->agencia = agencia;
	p->conta = conta;
	p->tipo_conta = PICK(account_types);
}

/*
 * Mostly everyday amounts, a tail of large ones; some round. Cents as an
 * integer, never float.
 */
static void
random_valor(char *out, size_t cap)
{
	double		r = pg_prng_double(&pg_global_prng_state);
	uint64		cents;

	if (r < 0.03)
		cents = 1 + below(99);	/* R$ 0.01 .. 0.99 */
	else if (r < 0.60)
		cents = 100 + below(15000); /* up to R$ 150 */
	else if (r < 0.88)
		cents = 15000 + below(85000);	/* up to R$ 1,000 */
	else if (r < 0.98)
		cents = 100000 + below(900000); /* up to R$ 10,000 */
	else if (r < 0.997)
		cents = 1000000 + below(9000000);	/* up to R$ 100,000 */
	else
		cents = 10000000 + below(490000000);	/* up to R$ 5,000,000 */
	if (cents >= 1000 && chance(0.15))
		cents -= cents % 100;	/* "R$ 50,00" */
	snprintf(out, cap, "%llu.%02llu", (unsigned long long) (cents / 100),
			 (unsigned long long) (cents % 100));
}

/*
 * Empty (a key or manual Pix), a QR code's 26-35 character txId, or a shorter
 * one.
 */
static void
random_tx_id(char *out)
{
	double		r = pg_prng_double(&pg_global_prng_state);
	int			len = r < 0.45 ? 0
	: r < 0.80 ? 26 + (int) below(10)
	: 1 + (int) below(25);

	random_chars(out, len, alnums);
}

/* Mostly no note at all, as most payments made with a Pix key. */
static const char *
random_note(const call_context *cx)
{
	if (!chance(0.3))
		return "";
	if (cx->emoji_ok && chance(0.2))
		return PICK(emoji_notes);
	return PICK(notes);
}

static void
generate_one(generated *g, const call_context *cx)
{
	const char *problem;
	pix_message *m = &g->m;

	random_party(&m->pagador, g->pagador_nome, g->pagador_cpf_cnpj,
				 g->pagador_agencia, g->pagador_conta, false);
	m->pagador.ispb = PICK(payer_ispbs);
	random_party(&m->recebedor, g->recebedor_nome, g->recebedor_cpf_cnpj,
				 g->recebedor_agencia, g->recebedor_conta, true);
	m->recebedor.ispb = cx->ispb;

	/*
	 * The Central Bank's layout: E, the payer's ISPB, the UTC minute, 11
	 * alphanumerics.
	 */
	g->end_to_end_id[0] = 'E';
	memcpy(g->end_to_end_id + 1, m->pagador.ispb, PIX_ISPB_LEN);
	memcpy(g->end_to_end_id + 1 + PIX_ISPB_LEN, cx->minute, 12);
	random_chars(g->end_to_end_id + 21, 11, alnums);
	m->end_to_end_id = g->end_to_end_id;

	random_valor(g->valor, sizeof(g->valor));
	m->valor = g->valor;
	random_tx_id(g->tx_id);
	m->tx_id = g->tx_id;
	m->campo_livre = random_note(cx);
	m->data_hora_pagamento = cx->data_hora;

	if ((problem = pix_message_problem(m)) != NULL)
		elog(ERROR, "pix: the generator made an invalid message: %s", problem);
}

/*
 * pix_generate_messages(ispb text, number int) RETURNS int: inserts number
 * messages addressed to ispb (PX001 when malformed or NULL; PX002 unless 1 <=
 * number <= pix.max_generate) and returns how many were inserted. All or
 * nothing: one transaction, like any INSERT.
 */
PG_FUNCTION_INFO_V1(pix_generate_messages);
Datum
pix_generate_messages(PG_FUNCTION_ARGS)
{
	char	   *ispb = pix_ispb_arg(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	int32		number;
	call_context cx;
	MemoryContext chunk_context;
	generated	g;
	int32		generated_rows = 0;
	uint64		inserted = 0;
	bool		authenticated = pix_authorize_admin(fcinfo, 2);

	/*
	 * The count before the registration: pixd asks "is this an admin's
	 * credential?" with a call of 0 messages to 00000000, whose answer is
	 * PX002 for an admin only (PX012/PX013 for anyone else), and writes
	 * nothing (shim/database.c, DB_ADMIN_CHECK).
	 */
	number = count_arg(fcinfo);
	if (authenticated &&
		pix_first_unregistered((const char *const *) &ispb, 1) >= 0)
		pix_raise_unregistered("ispb", ispb);
	pix_require_read_committed();
	init_call(&cx, ispb);
	SPI_connect();
	chunk_context =
		AllocSetContextCreate(CurrentMemoryContext, "pix generator chunk",
							  ALLOCSET_DEFAULT_SIZES);

	/*
	 * Counts generated rows, not inserted ones: a trigger that skips a row
	 * must not loop us.
	 */
	while (generated_rows < number)
	{
		int			rows = Min(CHUNK_ROWS, number - generated_rows);
		MemoryContext caller = MemoryContextSwitchTo(chunk_context);
		Datum	   *columns[PIX_MESSAGE_COLUMNS];

		for (int f = 0; f < PIX_MESSAGE_COLUMNS; f++)
			columns[f] = palloc(rows * sizeof(Datum));
		for (int row = 0; row < rows; row++)
		{
			CHECK_FOR_INTERRUPTS();
			generate_one(&g, &cx);
			pix_message_row(columns, row, &g.m, cx.now);
		}
		inserted += pix_messages_insert(columns, rows, false);
		generated_rows += rows;
		MemoryContextSwitchTo(caller);
		MemoryContextReset(chunk_context);
	}
	SPI_finish();
	PG_RETURN_INT32((int32) inserted);
}
