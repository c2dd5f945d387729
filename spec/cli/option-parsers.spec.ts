import { positiveInteger, timeoutMs } from '../../lib/cli/option-parsers';

/** The CLI's numeric options take decimal digits only: what Number() also reads is refused. */

it.each(['1e3', '0x2', ' 2', '2 ', '2.0', '+2', '0', '-1', '', '1_000', '9007199254740993'])('positiveInteger refuses %j', (value) => {
  expect(() => positiveInteger(value)).toThrow(/must be an integer >= 1/);
});

it.each([
  ['1', 1],
  ['16', 16],
  ['007', 7],
])('positiveInteger reads %j', (value, expected) => {
  expect(positiveInteger(value)).toBe(expected);
});

it.each(['1e3', '0x2', ' 2', '2.0'])('timeoutMs refuses %j', (value) => {
  expect(() => timeoutMs(value)).toThrow(/must be an integer from 0/);
});
