// The sign-in form, shown when the API answers 401: the token is exchanged for the session cookie.

import { request } from "./api.js";
import { setText, show } from "./dom.js";

const dialog = document.getElementById("login-dialog");
const form = document.getElementById("login-form");
const input = document.getElementById("login-token");
const error = document.getElementById("login-error");
let signedIn = null; // called once the cookie is set

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  show(error, false);
  try {
    await request("POST", "api/login", { json: { token: input.value.trim() }, signIn: true });
    input.value = "";
    dialog.close();
    signedIn?.();
  } catch (failure) {
    setText(error, failure.status === 401 ? "That token is not right." : `Could not sign in: ${failure.message}`);
    show(error, true);
    input.focus();
  } finally {
    button.disabled = false;
  }
});

// Without a token nothing on the page can work: the dialog cannot be dismissed.
dialog.addEventListener("cancel", (event) => event.preventDefault());

export function askToSignIn(then) {
  signedIn = then;
  if (!dialog.open) dialog.showModal();
  input.focus();
}
