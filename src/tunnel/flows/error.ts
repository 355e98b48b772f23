/**
 * The flow table's one error type, shared by its parts.
 *
 * @module
 */

/** FlowTableError is a change the table cannot take. */
export class FlowTableError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "FlowTableError";
  }
}
