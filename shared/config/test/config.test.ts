import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bool,
  type ConfigProblem,
  type ConfigSpec,
  ConfigValidationError,
  describeConfig,
  type Env,
  int,
  oneOf,
  optional,
  port,
  readConfig,
  str,
  url,
} from '@libertaria/config';
import { ConfigError, LibertariaError } from '@libertaria/protocol';

const spec = {
  SVC_COUNT: int({ default: 10, min: 1, max: 100, doc: 'How many.' }),
  SVC_OFFSET: int({ default: undefined, doc: 'Optional, unbounded.' }),
  SVC_PORT: port({ default: 8080, doc: 'Listener port.' }),
  SVC_NAME: str({ default: 'svc', pattern: /^[a-z]+$/, maxLength: 8, doc: 'Name.' }),
  SVC_TOKEN: str({ default: undefined, secret: true, pattern: /^[A-Za-z0-9]{16,}$/, doc: 'API token.' }),
  SVC_STORE: url({ default: 'redis://127.0.0.1:6379', protocols: ['redis:', 'rediss'], doc: 'Store.' }),
  SVC_LEVEL: oneOf(['debug', 'info', 'warn', 'error'], { default: 'info', doc: 'Log level.' }),
  SVC_ENABLED: bool({ default: true, doc: 'Switch.' }),
  SVC_KEY_FILE: optional(str({ doc: 'Key file path.' })),
} satisfies ConfigSpec;

/** Reads `spec` and returns the ConfigValidationError it must throw. */
function problemsOf(env: Env, options: Parameters<typeof readConfig<typeof spec>>[2] = {}): ConfigValidationError {
  try {
    readConfig(spec, env, options);
  } catch (err) {
    assert.ok(err instanceof ConfigValidationError, `expected a ConfigValidationError, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

/** The single problem `env` produces, which must concern `variable`. */
function onlyProblem(env: Env, variable: string): string {
  const err = problemsOf(env);
  assert.equal(err.problems.length, 1, err.message);
  assert.equal(err.variable, variable);
  assert.equal(err.problems[0]?.variable, variable);
  return err.problems[0]?.message ?? '';
}

describe('readConfig: defaults and normalisation', () => {
  it('applies defaults to an empty environment and types the result', () => {
    const config = readConfig(spec, {});
    assert.deepEqual(config, {
      SVC_COUNT: 10,
      SVC_OFFSET: undefined,
      SVC_PORT: 8080,
      SVC_NAME: 'svc',
      SVC_TOKEN: undefined,
      SVC_STORE: 'redis://127.0.0.1:6379',
      SVC_LEVEL: 'info',
      SVC_ENABLED: true,
      SVC_KEY_FILE: undefined,
    });
    assert.ok(Object.isFrozen(config));
  });

  it('gives each field its type, with undefined only for optional fields', () => {
    const config = readConfig(spec, { SVC_OFFSET: '-3', SVC_LEVEL: 'warn', SVC_KEY_FILE: '/etc/key.pem' });
    const count: number = config.SVC_COUNT;
    const offset: number | undefined = config.SVC_OFFSET;
    const level: 'debug' | 'info' | 'warn' | 'error' = config.SVC_LEVEL;
    const enabled: boolean = config.SVC_ENABLED;
    const keyFile: string | undefined = config.SVC_KEY_FILE;
    // @ts-expect-error an optional field may be undefined
    const offsetRequired: number = config.SVC_OFFSET;
    // @ts-expect-error a oneOf field is the union of its choices, not any string
    const levelNarrow: 'debug' = config.SVC_LEVEL;
    // @ts-expect-error an unknown key is not part of the result
    config.SVC_NOPE;
    assert.deepEqual(
      [count, offset, level, enabled, keyFile, offsetRequired, levelNarrow],
      [10, -3, 'warn', true, '/etc/key.pem', -3, 'warn'],
    );
  });

  it('treats an empty or blank value as unset', () => {
    const config = readConfig(spec, { SVC_COUNT: '', SVC_PORT: '   ', SVC_KEY_FILE: '\t\n', SVC_OFFSET: '' });
    assert.equal(config.SVC_COUNT, 10);
    assert.equal(config.SVC_PORT, 8080);
    assert.equal(config.SVC_KEY_FILE, undefined);
    assert.equal(config.SVC_OFFSET, undefined);
  });

  it('trims surrounding whitespace before validating', () => {
    const config = readConfig(spec, {
      SVC_COUNT: ' 42 ',
      SVC_PORT: '\t0\n',
      SVC_NAME: '  abc  ',
      SVC_LEVEL: ' debug',
      SVC_ENABLED: ' No ',
      SVC_STORE: ' rediss://cache:6380 ',
    });
    assert.equal(config.SVC_COUNT, 42);
    assert.equal(config.SVC_PORT, 0);
    assert.equal(config.SVC_NAME, 'abc');
    assert.equal(config.SVC_LEVEL, 'debug');
    assert.equal(config.SVC_ENABLED, false);
    assert.equal(config.SVC_STORE, 'rediss://cache:6380');
  });

  it('reads bool words in any case', () => {
    for (const [raw, value] of [
      ['true', true],
      ['TRUE', true],
      ['1', true],
      ['Yes', true],
      ['false', false],
      ['False', false],
      ['0', false],
      ['NO', false],
    ] as const) {
      assert.equal(readConfig(spec, { SVC_ENABLED: raw }).SVC_ENABLED, value, raw);
    }
  });

  it('accepts integers at both bounds, negative integers and leading zeros', () => {
    assert.equal(readConfig(spec, { SVC_COUNT: '1' }).SVC_COUNT, 1);
    assert.equal(readConfig(spec, { SVC_COUNT: '100' }).SVC_COUNT, 100);
    assert.equal(readConfig(spec, { SVC_COUNT: '007' }).SVC_COUNT, 7);
    assert.equal(readConfig(spec, { SVC_OFFSET: '-9007199254740991' }).SVC_OFFSET, -9007199254740991);
    assert.ok(Object.is(readConfig(spec, { SVC_OFFSET: '-0' }).SVC_OFFSET, 0));
    assert.equal(readConfig(spec, { SVC_PORT: '65535' }).SVC_PORT, 65535);
  });

  it('ignores variables the spec does not name when no prefix is given', () => {
    assert.equal(readConfig(spec, { SVC_CONUT: '5', PATH: '/bin' }).SVC_COUNT, 10);
  });

  it('reads process.env by default', () => {
    const name = 'LIBERTARIA_CONFIG_TEST_VALUE';
    process.env[name] = '17';
    try {
      assert.equal(readConfig({ [name]: int({ doc: 'x' }) })[name], 17);
    } finally {
      delete process.env[name];
    }
  });

  it('treats a missing required variable as a problem', () => {
    const required = { SVC_ONLY: int({ min: 0, max: 9, doc: 'Required.' }) };
    assert.throws(
      () => readConfig(required, {}),
      (err: unknown) =>
        err instanceof ConfigValidationError &&
        err.variable === 'SVC_ONLY' &&
        err.problems[0]?.message === 'SVC_ONLY is not set: expected an integer from 0 to 9',
    );
    assert.equal(readConfig(required, { SVC_ONLY: '3' }).SVC_ONLY, 3);
  });
});

describe('readConfig: each value that is not accepted', () => {
  it('rejects what is not a plain decimal integer', () => {
    for (const raw of ['abc', '1e3', '0x10', '+5', '5.0', '5 apples', '1_000', '٣', '--1', '-', 'Infinity', 'NaN']) {
      const message = onlyProblem({ SVC_COUNT: raw }, 'SVC_COUNT');
      assert.equal(
        message,
        `SVC_COUNT=${JSON.stringify(raw)} is not accepted: expected an integer from 1 to 100 (default 10)`,
      );
    }
  });

  it('rejects integers below the minimum and above the maximum', () => {
    assert.match(
      onlyProblem({ SVC_COUNT: '0' }, 'SVC_COUNT'),
      /^SVC_COUNT="0" is not accepted: expected an integer from 1 to 100/,
    );
    assert.match(onlyProblem({ SVC_COUNT: '-1' }, 'SVC_COUNT'), /^SVC_COUNT="-1" is not accepted/);
    assert.match(
      onlyProblem({ SVC_COUNT: '101' }, 'SVC_COUNT'),
      /^SVC_COUNT="101" is not accepted: expected an integer from 1 to 100/,
    );
  });

  it('rejects integers beyond the safe range even without bounds', () => {
    for (const raw of ['9007199254740992', '-9007199254740992', '99999999999999999999999']) {
      assert.equal(
        onlyProblem({ SVC_OFFSET: raw }, 'SVC_OFFSET'),
        `SVC_OFFSET="${raw}" is not accepted: expected an integer from -9007199254740991 to 9007199254740991, or unset`,
      );
    }
  });

  it('rejects ports that are not integers from 0 to 65535', () => {
    assert.equal(
      onlyProblem({ SVC_PORT: 'abc' }, 'SVC_PORT'),
      'SVC_PORT="abc" is not accepted: expected an integer from 0 to 65535 (default 8080)',
    );
    assert.match(onlyProblem({ SVC_PORT: '65536' }, 'SVC_PORT'), /^SVC_PORT="65536" is not accepted/);
    assert.match(onlyProblem({ SVC_PORT: '-1' }, 'SVC_PORT'), /^SVC_PORT="-1" is not accepted/);
    assert.match(onlyProblem({ SVC_PORT: '80.5' }, 'SVC_PORT'), /^SVC_PORT="80.5" is not accepted/);
  });

  it('rejects strings that are not URLs', () => {
    assert.equal(
      onlyProblem({ SVC_STORE: 'not a url' }, 'SVC_STORE'),
      'SVC_STORE="not a url" is not accepted: expected a URL with protocol redis: or rediss: (default "redis://127.0.0.1:6379")',
    );
    assert.match(onlyProblem({ SVC_STORE: '127.0.0.1:6379' }, 'SVC_STORE'), /^SVC_STORE="127.0.0.1:6379" is not/);
  });

  it('rejects URLs with another protocol, masking any password', () => {
    assert.match(
      onlyProblem({ SVC_STORE: 'http://cache:6379' }, 'SVC_STORE'),
      /^SVC_STORE="http:\/\/cache:6379" is not/,
    );
    const message = onlyProblem({ SVC_STORE: 'https://admin:hunter2@cache:6379/0' }, 'SVC_STORE');
    assert.ok(!message.includes('hunter2'), message);
    assert.match(message, /^SVC_STORE="https:\/\/admin:\*\*\*@cache:6379\/0" is not accepted/);
  });

  it('rejects a oneOf miss and lists the choices', () => {
    assert.equal(
      onlyProblem({ SVC_LEVEL: 'verbose' }, 'SVC_LEVEL'),
      'SVC_LEVEL="verbose" is not accepted: expected one of debug, info, warn, error (default "info")',
    );
    assert.match(onlyProblem({ SVC_LEVEL: 'INFO' }, 'SVC_LEVEL'), /^SVC_LEVEL="INFO" is not accepted/);
  });

  it('rejects bool words other than true, false, 1, 0, yes, no', () => {
    for (const raw of ['on', 'off', 'y', 'n', 't', '2', 'enabled', 'truee']) {
      assert.equal(
        onlyProblem({ SVC_ENABLED: raw }, 'SVC_ENABLED'),
        `SVC_ENABLED="${raw}" is not accepted: expected one of true, false, 1, 0, yes, no (any case) (default true)`,
      );
    }
  });

  it('rejects a string that does not match the whole pattern', () => {
    assert.equal(
      onlyProblem({ SVC_NAME: 'Abc' }, 'SVC_NAME'),
      'SVC_NAME="Abc" is not accepted: expected a string of at most 8 characters matching /^[a-z]+$/ (default "svc")',
    );
    // An unanchored pattern still has to match the whole value.
    const loose = { SVC_TAG: str({ default: 'a', pattern: /[a-z]+/g, doc: 'Tag.' }) };
    assert.equal(readConfig(loose, { SVC_TAG: 'abc' }).SVC_TAG, 'abc');
    assert.equal(readConfig(loose, { SVC_TAG: 'abc' }).SVC_TAG, 'abc'); // the g flag keeps no state
    assert.throws(() => readConfig(loose, { SVC_TAG: 'abc1' }), ConfigValidationError);
  });

  it('rejects a string longer than maxLength and does not echo all of a long value', () => {
    assert.match(
      onlyProblem({ SVC_NAME: 'abcdefghi' }, 'SVC_NAME'),
      /^SVC_NAME="abcdefghi" is not accepted: .*at most 8/,
    );
    const huge = 'x'.repeat(5000);
    const message = onlyProblem({ SVC_NAME: huge }, 'SVC_NAME');
    assert.ok(message.length < 300, message);
    assert.match(message, /\(5000 characters\)/);
  });

  it('escapes control characters in echoed values', () => {
    const message = onlyProblem({ SVC_LEVEL: 'in\u001b[31mfo' }, 'SVC_LEVEL');
    assert.ok(!message.includes('\u001b'), message);
    assert.match(message, /^SVC_LEVEL="in\\u001b\[31mfo"/);
  });

  it('never echoes the value of a secret field', () => {
    const token = 'short-secret-value!';
    const err = problemsOf({ SVC_TOKEN: token });
    assert.equal(err.variable, 'SVC_TOKEN');
    assert.ok(!err.message.includes(token), err.message);
    assert.ok(!err.message.includes('short-secret'), err.message);
    assert.ok(!JSON.stringify(err.problems).includes(token));
    assert.match(err.message, /SVC_TOKEN \(secret, value not shown\) is not accepted: expected a string matching/);
    assert.equal(readConfig(spec, { SVC_TOKEN: 'abcdefghijklmnop' }).SVC_TOKEN, 'abcdefghijklmnop');
  });
});

describe('readConfig: reporting', () => {
  it('reports every problem at once in one ConfigError, one line each, in spec order', () => {
    const err = problemsOf({ SVC_PORT: 'abc', SVC_COUNT: '0', SVC_LEVEL: 'loud', SVC_ENABLED: 'maybe' });
    assert.ok(err instanceof ConfigError);
    assert.ok(err instanceof LibertariaError);
    assert.equal(err.code, 'CONFIG_INVALID');
    assert.equal(err.name, 'ConfigValidationError');
    assert.equal(err.variable, 'SVC_COUNT');
    assert.deepEqual(
      err.problems.map((p) => p.variable),
      ['SVC_COUNT', 'SVC_PORT', 'SVC_LEVEL', 'SVC_ENABLED'],
    );
    const lines = err.message.split('\n');
    assert.equal(lines[0], 'invalid configuration (4 problems):');
    assert.deepEqual(
      lines.slice(1),
      err.problems.map((p) => `  - ${p.message}`),
    );
    for (const problem of err.problems) assert.ok(problem.message.startsWith(problem.variable), problem.message);
  });

  it('rejects unknown variables that share the prefix and suggests the closest name', () => {
    const err = problemsOf({ SVC_PROT: '9000', SVC_LEVL: 'info', OTHER_THING: 'x' }, { prefix: 'SVC_' });
    assert.deepEqual(err.problems, [
      { variable: 'SVC_LEVL', message: 'SVC_LEVL is set but is not a known variable; did you mean SVC_LEVEL?' },
      { variable: 'SVC_PROT', message: 'SVC_PROT is set but is not a known variable; did you mean SVC_PORT?' },
    ]);
  });

  it('does not echo the value of an unknown variable, nor suggest a far-fetched name', () => {
    const err = problemsOf({ SVC_DATABASE_PASSWORD: 'hunter2' }, { prefix: ['SVC_', 'X_'] });
    assert.deepEqual(err.problems, [
      { variable: 'SVC_DATABASE_PASSWORD', message: 'SVC_DATABASE_PASSWORD is set but is not a known variable' },
    ]);
  });

  it('ignores an unknown prefixed variable that is empty', () => {
    assert.equal(readConfig(spec, { SVC_PROT: '  ' }, { prefix: 'SVC_' }).SVC_PORT, 8080);
  });

  it('reports cross-field problems from validate together with the others', () => {
    const validate = (config: { readonly SVC_COUNT: number; readonly SVC_PORT: number }): ConfigProblem[] =>
      config.SVC_COUNT > config.SVC_PORT
        ? [{ variable: 'SVC_COUNT', message: 'SVC_COUNT must not exceed SVC_PORT' }]
        : [];
    assert.equal(readConfig(spec, { SVC_COUNT: '5', SVC_PORT: '6' }, { validate }).SVC_COUNT, 5);
    const err = problemsOf({ SVC_COUNT: '50', SVC_PORT: '6', SVC_OOPS: '1' }, { validate });
    assert.deepEqual(err.problems, [{ variable: 'SVC_COUNT', message: 'SVC_COUNT must not exceed SVC_PORT' }]);
    // With per-variable problems, cross-field checks wait: they need a whole, typed configuration.
    let called = false;
    const spy = (): ConfigProblem[] => {
      called = true;
      return [];
    };
    const err2 = problemsOf({ SVC_COUNT: 'x' }, { validate: spy });
    assert.equal(called, false);
    assert.equal(err2.problems.length, 1);
  });

  it('refuses a ConfigValidationError without problems', () => {
    assert.throws(() => new ConfigValidationError([]), TypeError);
  });
});

describe('field builders', () => {
  it('refuse a default the field itself would reject', () => {
    assert.throws(() => int({ default: 0, min: 1, max: 5, doc: '' }), TypeError);
    assert.throws(() => int({ default: 1.5, doc: '' }), TypeError);
    assert.throws(() => port({ default: 70000, doc: '' }), TypeError);
    assert.throws(() => str({ default: 'ABC', pattern: /^[a-z]+$/, doc: '' }), TypeError);
    assert.throws(() => url({ default: 'http://x', protocols: ['redis:'], doc: '' }), TypeError);
    // @ts-expect-error the default must be one of the choices
    assert.throws(() => oneOf(['a', 'b'], { default: 'c', doc: '' }), TypeError);
  });

  it('refuse inconsistent bounds', () => {
    assert.throws(() => int({ min: 5, max: 1, doc: '' }), TypeError);
    assert.throws(() => int({ min: 0.5, doc: '' }), TypeError);
    assert.throws(() => str({ maxLength: 0, doc: '' }), TypeError);
    assert.throws(() => url({ protocols: [], doc: '' }), TypeError);
  });

  it('optional() drops the default', () => {
    const field = optional(int({ default: 3, doc: 'x' }));
    assert.equal(field.presence, 'optional');
    assert.equal(readConfig({ X: field }, {}).X, undefined);
  });
});

describe('describeConfig', () => {
  it('renders a markdown table row per variable, in spec order', () => {
    assert.equal(
      describeConfig(spec),
      [
        '| variable | default | accepted | description |',
        '| --- | --- | --- | --- |',
        '| `SVC_COUNT` | `10` | an integer from 1 to 100 | How many. |',
        '| `SVC_OFFSET` | *unset* | an integer from -9007199254740991 to 9007199254740991, or unset | Optional, unbounded. |',
        '| `SVC_PORT` | `8080` | an integer from 0 to 65535 | Listener port. |',
        '| `SVC_NAME` | `svc` | a string of at most 8 characters matching `^[a-z]+$` | Name. |',
        '| `SVC_TOKEN` | *unset* | a string matching `^[A-Za-z0-9]{16,}$`, or unset | API token. |',
        '| `SVC_STORE` | `redis://127.0.0.1:6379` | a URL with protocol `redis:` or `rediss:` | Store. |',
        '| `SVC_LEVEL` | `info` | one of `debug`, `info`, `warn`, `error` | Log level. |',
        '| `SVC_ENABLED` | `true` | one of `true`, `false`, `1`, `0`, `yes`, `no` (any case) | Switch. |',
        '| `SVC_KEY_FILE` | *unset* | any string, or unset | Key file path. |',
      ].join('\n'),
    );
  });

  it('marks required variables, hides secret defaults and URL passwords, and escapes pipes', () => {
    const table = describeConfig({
      A_REQ: int({ doc: 'Required.' }),
      A_SECRET: str({ default: 'hunter2', secret: true, doc: 'Secret.' }),
      A_URL: url({ default: 'redis://user:hunter2@cache:6379', protocols: ['redis:'], doc: 'Store.' }),
      A_ALT: str({ default: 'a', pattern: /^(a|b)$/, doc: 'Either a | b,\nnothing else.' }),
    } satisfies ConfigSpec);
    const rows = table.split('\n').slice(2);
    assert.equal(
      rows[0],
      '| `A_REQ` | *required* | an integer from -9007199254740991 to 9007199254740991 | Required. |',
    );
    assert.equal(rows[1], '| `A_SECRET` | *hidden* | any string | Secret. |');
    assert.equal(rows[2], '| `A_URL` | `redis://user:***@cache:6379` | a URL with protocol `redis:` | Store. |');
    assert.equal(rows[3], '| `A_ALT` | `a` | a string matching `^(a\\|b)$` | Either a \\| b, nothing else. |');
    assert.ok(!table.includes('hunter2'));
  });
});
