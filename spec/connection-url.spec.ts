import { parseConnectionUrl } from '../lib/connection-url';
import { BadConnectionUrlError } from '../lib';

/** What parseConnectionUrl makes of each TLS mode: the engines' own names, in any case. */
describe('connection URL TLS modes', () => {
  const cases: Array<[string, unknown]> = [
    ['postgres://u@h/db', undefined],
    ['postgres://u@h/db?sslmode=disable', undefined],
    ['postgres://u@h/db?sslmode=prefer', { rejectUnauthorized: false }],
    ['postgres://u@h/db?sslmode=require', { rejectUnauthorized: false }],
    ['postgres://u@h/db?sslmode=REQUIRE', { rejectUnauthorized: false }],
    ['postgres://u@h/db?sslmode=verify-full', true],
    ['postgres://u@h/db?ssl=true', { rejectUnauthorized: false }],
    ['postgres://u@h/db?ssl=1', { rejectUnauthorized: false }],
    ['postgres://u@h/db?ssl=false', undefined],
    ['mysql://u@h/db?ssl-mode=DISABLED', undefined],
    ['mysql://u@h/db?ssl-mode=PREFERRED', { rejectUnauthorized: false }],
    ['mysql://u@h/db?ssl-mode=REQUIRED', { rejectUnauthorized: false }],
    ['mariadb://u@h/db?ssl-mode=VERIFY_IDENTITY', { rejectUnauthorized: true }],
    ['mariadb://u@h/db?sslmode=verify-ca', { rejectUnauthorized: true }],
  ];
  it.each(cases)('%s', (url, ssl) => {
    expect(parseConnectionUrl(url, 'the test database').ssl).toEqual(ssl);
  });

  it.each([
    'postgres://u:pw@h/db?sslmode=require&sslmode=disable',
    'mysql://u:pw@h/db?ssl-mode=REQUIRED&sslmode=disable',
    'postgres://u:pw@h/db?sslmode=verify-full&ssl=false',
    'mysql://u:pw@h/db?charset=utf8mb4&charset=latin1',
  ])('refuses %s: a second value would be ignored', (url) => {
    expect(() => parseConnectionUrl(url, 'the test database')).toThrow(BadConnectionUrlError);
  });

  it.each(['requird', 'verify_full', 'yes', 'on', 'constructor', '__proto__', ''])(
    'refuses sslmode=%s rather than connecting in plain text',
    (mode) => {
      for (const url of [`postgres://u:pw@h/db?sslmode=${mode}`, `mariadb://u:pw@h/db?ssl-mode=${mode}`]) {
        expect(() => parseConnectionUrl(url, 'the test database')).toThrow(BadConnectionUrlError);
        expect(() => parseConnectionUrl(url, 'the test database')).toThrow(/TLS mode/);
      }
    },
  );
});
