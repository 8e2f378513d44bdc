// Browser test of the zorgnet demo's citizen portal and professionals' viewer, in the Debian
// Chromium driven by playwright-core, with axe-core checking every page.
//
//   node run.mjs --portal URL --viewer URL --data DIR --citizen USER --bsn BSN --out DIR
//
// --portal and --viewer are the URLs `zorgnet demo` prints, --data its data directory (for
// network.json: the hospital's URA), --citizen a demo citizen with data at several
// organisations and --bsn their BSN, --out the folder for the screenshots (NN-name.png).
// Optional: --internist USER (default internist), --emergency USER (default seh-arts),
// --chromium PATH (default $CHROMIUM or /usr/bin/chromium).
//
// Walks: the citizen logs in through the identity provider, sees the overview, opts out of a
// category in "Mijn keuzes", downloads the record (a FHIR Bundle), opens the print view; the
// hospital's internist searches the citizen by BSN, registers a treatment relation and sees the
// patient page; the emergency doctor opens the emergency view with a reason; the citizen sees
// that access in "Wie keek" and opens a proof. Every page: a screenshot, and axe-core, failing
// on any violation of impact serious or critical. Also: the skip link is the first focusable
// element, and the overview does not scroll sideways at 200 % zoom.
//
// Exits 0 when every check passed, 1 otherwise, printing what failed.

import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate, createHash } from 'node:crypto';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
/// Longest a page or an action may take.
const TIMEOUT_MS = 30_000;
/// Longest the nodes may take to know each other's addresses (the viewer then says that not
/// every source answered).
const SOURCES_DEADLINE_MS = 30_000;

function parseArguments(argv) {
  const options = {
    internist: 'internist',
    emergency: 'seh-arts',
    chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i];
    if (!name.startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`unexpected argument ${name}`);
    }
    options[name.slice(2)] = argv[i + 1];
  }
  for (const required of ['portal', 'viewer', 'data', 'citizen', 'bsn', 'out']) {
    if (!options[required]) {
      throw new Error(`--${required} is required`);
    }
  }
  options.portal = options.portal.replace(/\/$/, '');
  options.viewer = options.viewer.replace(/\/$/, '');
  return options;
}

const options = parseArguments(process.argv.slice(2));
const network = JSON.parse(readFileSync(join(options.data, 'network.json'), 'utf8'));
const hospital = network.nodes.find((node) => node.name.startsWith('Ziekenhuis'));
if (!hospital) {
  throw new Error('no hospital in network.json');
}
rmSync(options.out, { recursive: true, force: true });
mkdirSync(options.out, { recursive: true });

const failures = [];
let shot = 0;
const started = Date.now();

function fail(message) {
  failures.push(message);
  console.error(`FAIL: ${message}`);
}

function check(condition, message) {
  if (!condition) {
    fail(message);
  }
  return condition;
}

/// A screenshot of the whole page, then axe-core in it; the page counts as visited.
async function visit(page, name, { axe = true } = {}) {
  shot += 1;
  const file = join(options.out, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`page ${name}: ${page.url()} -> ${file}`);
  if (axe) {
    await accessible(page, name);
  }
}

/// Runs axe-core in the page; violations of impact serious or critical fail the test, others
/// are printed.
async function accessible(page, name) {
  const present = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!present) {
    await page.evaluate(AXE_SOURCE);
  }
  const results = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      helpUrl: v.helpUrl,
      nodes: v.nodes.map((n) => ({ target: n.target.join(' '), html: n.html, summary: n.failureSummary })),
    }));
  });
  for (const v of results) {
    const serious = v.impact === 'serious' || v.impact === 'critical';
    const lines = [`axe ${v.impact} ${v.id} on ${name}: ${v.help} (${v.helpUrl})`];
    for (const n of v.nodes.slice(0, 10)) {
      lines.push(`    ${n.target}: ${n.html.slice(0, 200)}`);
      lines.push(`      ${String(n.summary).replace(/\n/g, '\n      ')}`);
    }
    if (v.nodes.length > 10) {
      lines.push(`    ... and ${v.nodes.length - 10} more`);
    }
    if (serious) {
      fail(lines.join('\n'));
    } else {
      console.log(lines.join('\n'));
    }
  }
}

/// The skip link is the first thing Tab reaches, and it moves the focus into the main content.
async function skipLinkFirst(page, name) {
  await page.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
  });
  // Start from the top of the document, as after loading it.
  await page.evaluate(() => document.body.focus());
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => {
    const e = document.activeElement;
    return e ? { cls: e.className, href: e.getAttribute('href'), text: e.textContent.trim() } : null;
  });
  if (!check(first && first.cls.includes('skip-link'), `${name}: the first focusable element is the skip link, not ${JSON.stringify(first)}`)) {
    return;
  }
  const visible = await page.evaluate(() => {
    const box = document.activeElement.getBoundingClientRect();
    return box.left >= 0 && box.top >= 0 && box.width > 0;
  });
  check(visible, `${name}: the focused skip link is visible`);
  await page.keyboard.press('Enter');
  const target = await page.evaluate(() => document.activeElement?.id || document.location.hash);
  check(target === 'inhoud' || target === '#inhoud', `${name}: the skip link leads to the main content (${target})`);
}

/// Logs `page` in through the identity provider's form as `user`, starting at `loginUrl`.
async function logIn(page, loginUrl, user, screenshotName) {
  await page.goto(loginUrl);
  await page.waitForURL(/\/authorize/);
  if (screenshotName) {
    await visit(page, screenshotName);
  }
  await page.check(`input[name="user"][value="${user}"]`);
  await Promise.all([page.waitForLoadState('load'), page.click('button[type="submit"]')]);
}

/// The page's main text.
async function mainText(page) {
  return page.locator('main').innerText();
}

async function citizenFirstPart(context) {
  const page = await context.newPage();
  // Start page, not logged in.
  await page.goto(`${options.portal}/`);
  await visit(page, 'portal-start');
  await skipLinkFirst(page, 'portal-start');

  await logIn(page, `${options.portal}/login`, options.citizen, 'idp-login');
  check(new URL(page.url()).pathname === '/overzicht', `the citizen lands on the overview, not ${page.url()}`);
  await page.waitForSelector('h1');
  await visit(page, 'portal-overview');
  await skipLinkFirst(page, 'portal-overview');
  const overview = await mainText(page);
  check(overview.includes('Ziekenhuis'), 'the overview shows data of the hospital');

  // 200 % zoom: a 1280 px wide window at twice the size is 640 CSS pixels wide.
  const zoomed = await context.newPage();
  await zoomed.setViewportSize({ width: 640, height: 800 });
  await zoomed.goto(`${options.portal}/overzicht`);
  const overflow = await zoomed.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  check(overflow.scroll <= overflow.client, `the overview at 200 % zoom scrolls sideways: ${JSON.stringify(overflow)}`);
  await visit(zoomed, 'portal-overview-200pct', { axe: false });
  await zoomed.close();

  // Mijn keuzes: opt out of sharing medication.
  await page.click('nav a[href="/keuzes"]');
  await page.waitForSelector('h1');
  await visit(page, 'portal-choices');
  await page.selectOption('#onderwerp-nee', 'medication');
  await Promise.all([
    page.waitForLoadState('load'),
    page.locator('form', { has: page.locator('#onderwerp-nee') }).locator('button[type="submit"]').click(),
  ]);
  const confirmation = page.locator('.verdict.ok[role="status"]');
  if (check(await confirmation.count() === 1, 'Mijn keuzes confirms the opt-out')) {
    check((await confirmation.innerText()).includes('Uw keuze is vastgelegd'), 'the confirmation says the choice is recorded');
  }
  const current = await page.locator('table.choices').innerText().catch(() => '');
  check(/medic/i.test(current), `the opt-out of medication is among the current choices: ${current}`);
  await visit(page, 'portal-choice-confirmed');

  // Download: a FHIR Bundle in JSON.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('nav a[href="/download.json"]'),
  ]);
  const file = await download.path();
  let bundle = null;
  try {
    bundle = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    fail(`the download is not JSON: ${e}`);
  }
  if (bundle) {
    check(bundle.resourceType === 'Bundle', `the download is a FHIR Bundle, not ${bundle.resourceType}`);
    check(Array.isArray(bundle.entry) && bundle.entry.length > 0, 'the downloaded Bundle has entries');
    console.log(`download ${download.suggestedFilename()}: Bundle of ${bundle.entry?.length} entries`);
  }

  // The print view, on screen and as printed.
  await page.click('nav a[href="/afdrukken"]');
  await page.waitForSelector('h1');
  await visit(page, 'portal-print');
  await page.emulateMedia({ media: 'print' });
  await visit(page, 'portal-print-media', { axe: false });
  await page.emulateMedia({ media: 'screen' });
  return page;
}

async function professional(context, user, name) {
  const page = await context.newPage();
  await logIn(page, `${options.viewer}/${hospital.ura}/login`, user);
  check(page.url().includes(`/${hospital.ura}`), `${user} lands at the hospital's viewer, not ${page.url()}`);
  await page.waitForSelector('#bsn');
  await visit(page, `viewer-${name}-search`);
  await skipLinkFirst(page, `viewer-${name}-search`);
  await page.fill('#bsn', options.bsn);
  await Promise.all([page.waitForLoadState('load'), page.locator('form[action$="/zoeken"] button[type="submit"]').click()]);
  await page.waitForSelector('h1');
  return page;
}

async function internist(context) {
  const page = await professional(context, options.internist, 'internist');
  await visit(page, 'viewer-internist-patient-before-relation');
  const register = page.locator('form[action$="/relatie"] button[type="submit"]');
  if (await register.count() > 0) {
    await page.selectOption('#kind', 'referral').catch(() => {});
    await Promise.all([page.waitForLoadState('load'), register.click()]);
  }
  let text = await mainText(page);
  check(text.includes('Uw organisatie heeft een behandelrelatie'), 'the relation is registered');
  // The nodes learn each other's addresses from the hub within seconds of the start.
  const deadline = Date.now() + SOURCES_DEADLINE_MS;
  while (text.includes('Niet alle bronnen gaven antwoord') && Date.now() < deadline) {
    await page.waitForTimeout(500);
    await page.goto(`${options.viewer}/${hospital.ura}/patient`);
    text = await mainText(page);
  }
  const answered = await page.locator('.sources ul').first().innerText().catch(() => '');
  check(answered.includes('Huisartsenpraktijk') || answered.includes('Apotheek'), `the internist sees data of other organisations: ${answered}`);
  await visit(page, 'viewer-internist-patient');
  await skipLinkFirst(page, 'viewer-internist-patient');
  await page.goto(`${options.viewer}/${hospital.ura}/patient?lang=en`);
  check((await page.getAttribute('html', 'lang')) === 'en', "the viewer's patient page is in English with ?lang=en");
  await visit(page, 'viewer-internist-patient-en');
  await page.goto(`${options.viewer}/${hospital.ura}/patient?lang=nl`);
}

async function emergencyDoctor(context) {
  const page = await professional(context, options.emergency, 'emergency');
  await page.goto(`${options.viewer}/${hospital.ura}/nood`);
  await page.waitForSelector('#reason');
  await visit(page, 'viewer-emergency-form');
  await page.fill('#reason', 'bewusteloos op de SEH');
  await Promise.all([page.waitForLoadState('load'), page.locator('form[action$="/nood"] button[type="submit"]').click()]);
  const banner = page.locator('.emergency-banner');
  check(await banner.count() === 1, 'the emergency view shows its banner');
  check(await page.locator('body.emergency-access').count() === 1, 'the emergency view is marked as emergency access');
  await visit(page, 'viewer-emergency-view');
}

async function citizenSecondPart(page) {
  await page.click('nav a[href="/wie-keek"]');
  await page.waitForSelector('h1');
  await visit(page, 'portal-access-log');
  // textContent: the flag is shown in capitals by CSS.
  const log = await page.locator('main').textContent();
  check(log.includes('NOODTOEGANG: bewusteloos op de SEH'), 'the access log shows the emergency access with its reason');
  check(log.includes('900000203'), "the access log names the emergency doctor's UZI number");
  // The oldest record: the likeliest to be in a signed checkpoint already.
  const proof = page.locator('a[href^="/wie-keek/bewijs"]').last();
  if (check(await proof.count() === 1, 'the access log links to proofs')) {
    await Promise.all([page.waitForLoadState('load'), proof.click()]);
    await page.waitForSelector('h1');
    const verdict = await page.locator('.verdict').innerText().catch(() => '');
    console.log(`proof verdict: ${verdict}`);
    // A node signs a checkpoint of its access log every minute: a record younger than that
    // has no proof yet (409), which the page says.
    const verified = (await page.locator('.verdict.ok').count()) === 1;
    check(verified || verdict.includes('409'), `the proof page verifies the record or says it is not yet in a checkpoint: ${verdict}`);
    await visit(page, 'portal-proof');
  }
  // The same pages in English.
  for (const [path, name] of [['/overzicht', 'overview'], ['/keuzes', 'choices'], ['/wie-keek', 'access-log']]) {
    await page.goto(`${options.portal}${path}?lang=en`);
    check((await page.getAttribute('html', 'lang')) === 'en', `the portal's ${name} is in English with ?lang=en`);
    await visit(page, `portal-${name}-en`);
  }
  await page.goto(`${options.portal}/overzicht?lang=nl`);
}

// The pinned certificate is the only exception: a node's certificate (another key of the same
// demo CA) is still refused.
async function otherCertificatesRefused(context) {
  const page = await context.newPage();
  let error = '';
  try {
    await page.goto(`${hospital.fhir_base}/metadata`);
  } catch (e) {
    error = String(e);
  }
  check(/ERR_CERT/.test(error), `a certificate other than the demo services' is refused: ${error || 'it loaded'}`);
  await page.close();
}

async function viewerStart(context) {
  const page = await context.newPage();
  await page.goto(`${options.viewer}/`);
  await visit(page, 'viewer-start');
  await skipLinkFirst(page, 'viewer-start');
  await page.close();
}

// The demo CA is not in the browser's store. Instead of ignoring certificate errors, the
// browser accepts exactly the demo's service certificate (the portal's and the identity
// provider's), after this script has checked that the demo CA signed it: any other
// certificate, or a page served without TLS, still fails.
const servicesCertificate = new X509Certificate(
  readFileSync(join(options.data, 'tls-services', 'cert.pem')),
);
const demoCa = new X509Certificate(readFileSync(join(options.data, 'demo-ca', 'ca.pem')));
if (!servicesCertificate.verify(demoCa.publicKey)) {
  console.error('the demo\'s service certificate is not signed by its demo CA');
  process.exit(1);
}
const servicesSpki = createHash('sha256')
  .update(servicesCertificate.publicKey.export({ type: 'spki', format: 'der' }))
  .digest('base64');

const browser = await chromium.launch({
  executablePath: options.chromium,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-dev-shm-usage',
    '--disable-gpu',
    `--ignore-certificate-errors-spki-list=${servicesSpki}`,
  ],
});
try {
  const contextOptions = {
    bypassCSP: true, // only to inject axe-core: the pages have no scripts of their own
    viewport: { width: 1280, height: 900 },
    locale: 'nl-NL',
    acceptDownloads: true,
  };
  const contexts = [];
  const newContext = async () => {
    const context = await browser.newContext(contextOptions);
    context.setDefaultTimeout(TIMEOUT_MS);
    contexts.push(context);
    return context;
  };
  await otherCertificatesRefused(await newContext());
  const citizenContext = await newContext();
  const citizen = await citizenFirstPart(citizenContext);
  await viewerStart(await newContext());
  await internist(await newContext());
  await emergencyDoctor(await newContext());
  await citizenSecondPart(citizen);
  for (const context of contexts) {
    await context.close();
  }
} catch (e) {
  fail(`the walk stopped: ${e.stack || e}`);
} finally {
  await browser.close();
}

console.log(`${shot} pages in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${options.out}`);
if (failures.length > 0) {
  console.error(`${failures.length} browser check(s) failed`);
  process.exit(1);
}
console.log('browser checks passed');
