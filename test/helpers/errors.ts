/**
 * Assertions about how library calls fail.
 */
import { expect } from 'vitest';
import { ConntrackError } from '../../lib/base/errors.js';

/** The ConntrackError a promise rejects with; fails the test if it resolves or rejects with anything else. */
export async function rejection(promise: Promise<unknown>): Promise<ConntrackError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConntrackError);
    return error as ConntrackError;
  }
  throw new Error('expected a rejection');
}
