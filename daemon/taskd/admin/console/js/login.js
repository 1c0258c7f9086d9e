// The login page: the token goes to POST /api/session once; the answer sets an HttpOnly
// cookie (the page never stores the token).

import { api } from "./lib.js";

const form = document.getElementById("login-form");
const input = document.getElementById("token");
const problem = document.getElementById("login-error");

async function alreadyIn() {
  try {
    const session = await api("/api/session");
    if (session.role !== null) location.replace("/");
  } catch {
    // the page stays: the form reports what the server says
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  problem.textContent = "";
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("/api/session", { method: "POST", body: { token: input.value } });
    input.value = "";
    location.replace("/");
  } catch (error) {
    problem.textContent = error.status === 401 ? "Wrong token." : `Login failed: ${error.message}`;
    input.select();
  } finally {
    button.disabled = false;
  }
});

alreadyIn();
input.focus();
